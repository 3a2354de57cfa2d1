"""The optimiser's parameter groups for a detectron2 detector with a PE backbone: layer-wise lr decay
whose depth is read from the built model."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch.nn as nn
from detectron2.solver.build import get_default_optimizer_params

from ...models.lr_decay import pe_backbone_blocks, pe_lr_decay_rate


def pe_optimizer_params(model: nn.Module, *, lr_decay_rate: float = 1.0,
                        lr_factor_func: Callable[..., float] = pe_lr_decay_rate, **options) -> list[dict]:
    """``get_default_optimizer_params(model, ...)`` with PE layer-wise lr decay at ``lr_decay_rate``,
    over as many layers as the model's PE backbone has blocks (:func:`pe_backbone_blocks`).

    In a LazyConfig: ``optimizer.params = L(pe_optimizer_params)(lr_decay_rate=0.9, ...)``;
    ``tools/train_net.py`` sets ``optimizer.params.model`` to the built model. ``lr_factor_func`` is
    called as ``lr_factor_func(name, lr_decay_rate=..., num_layers=...)`` (pe_lr_decay_rate, or a
    project's own factor built on it); ``options`` go to ``get_default_optimizer_params``.
    """
    lr_factor = partial(lr_factor_func, lr_decay_rate=lr_decay_rate, num_layers=pe_backbone_blocks(model))
    return get_default_optimizer_params(model, lr_factor_func=lr_factor, **options)
