"""Layer-wise learning-rate decay for PE backbones in mmengine's optimizer wrapper."""

from __future__ import annotations

from typing import Optional

from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ...models.lr_decay import pe_backbone_blocks, pe_lr_decay_rate

_NO_DECAY = (".bias", "positional_embedding", "class_embedding")


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PELayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups with lr ``base_lr * decay_rate ** (num_layers + 1 - layer)`` (embeddings are
    layer 0, block i is layer i + 1, everything outside the backbone keeps the base lr) and no
    weight decay on biases, norms and the position/class embeddings, as BEiT-style fine-tuning does.

    ``paramwise_cfg=dict(decay_rate=0.65)``; ``num_layers`` is the number of blocks of the model's PE
    backbone (:func:`pe_dense.models.lr_decay.pe_backbone_blocks`), read from the module being optimised,
    so it follows ``keep_blocks`` and the truncation after the deepest ``out_indices``. Frozen
    parameters are left out of the optimizer.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if "num_layers" in self.paramwise_cfg:
            raise ValueError("paramwise_cfg.num_layers is read from the model's PE backbone: remove it from the config")

    def add_params(self, params: list[dict], module, **kwargs) -> None:
        num_layers = pe_backbone_blocks(module)
        decay_rate = self.paramwise_cfg["decay_rate"]
        groups: dict[tuple[float, bool], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim == 1 or name.endswith(_NO_DECAY)
            scale = pe_lr_decay_rate(name, decay_rate, num_layers)
            group = groups.setdefault((scale, no_decay), {
                "params": [], "lr": self.base_lr * scale,
                "weight_decay": 0.0 if no_decay else self.base_wd,
            })
            group["params"].append(param)
        params.extend(groups.values())
