"""Layer-wise learning-rate decay for PE parameter names (the ViTDet/BEiT recipe, PE's key names).

Shared by the detectron2 and mmsegmentation integrations: both name the encoder's parameters under
a ``backbone`` prefix, and both read the depth (``num_layers``) from the built model with
:func:`pe_backbone_blocks`, so no config repeats it.
"""

from __future__ import annotations

import re

import torch.nn as nn

from .vision_transformer import PEVisionTransformer

_BLOCK = re.compile(r"\.resblocks\.(\d+)\.")
_EMBEDDINGS = (".conv1.", ".positional_embedding", ".class_embedding", ".ln_pre.")


def pe_lr_decay_rate(name: str, lr_decay_rate: float = 1.0, num_layers: int = 12) -> float:
    """The lr multiplier of parameter ``name`` of a model whose backbone is a PE encoder.

    Embeddings count as layer 0, block i as layer i + 1, everything outside the backbone as layer
    num_layers + 1 (multiplier 1); the multiplier is ``lr_decay_rate ** (num_layers + 1 - layer)``.
    detectron2 takes it as ``get_default_optimizer_params(lr_factor_func=...)``; mmsegmentation
    through ``PELayerDecayOptimizerConstructor``.
    """
    layer = num_layers + 1
    if name.startswith("backbone"):
        block = _BLOCK.search(name)
        if block:
            layer = int(block[1]) + 1
        elif any(part in name + "." for part in _EMBEDDINGS):
            layer = 0
    return lr_decay_rate ** (num_layers + 1 - layer)


def pe_backbone_blocks(model: nn.Module) -> int:
    """How many blocks the PE encoder of ``model``'s backbone has (its ``num_blocks``, after any
    ``keep_blocks`` or truncation): the ``num_layers`` of :func:`pe_lr_decay_rate` for that model."""
    found = [(name, m) for name, m in model.named_modules()
             if name.startswith("backbone") and isinstance(m, PEVisionTransformer)]
    if len(found) != 1:
        what = "no PE encoder" if not found else f"several PE encoders ({', '.join(n for n, _ in found)})"
        raise ValueError(f"layer-wise lr decay needs one PE encoder under the model's `backbone`; found {what}")
    return found[0][1].num_blocks
