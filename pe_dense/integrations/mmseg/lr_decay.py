"""Layer-wise learning-rate decay for PE backbones in mmengine's optimizer wrapper."""

from __future__ import annotations

from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

from ...models.lr_decay import pe_lr_decay_rate

_NO_DECAY = (".bias", "positional_embedding", "class_embedding")


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PELayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups with lr ``base_lr * decay_rate ** (num_layers + 1 - layer)`` (embeddings are
    layer 0, block i is layer i + 1, everything outside the backbone keeps the base lr) and no
    weight decay on biases, norms and the position/class embeddings, as BEiT-style fine-tuning does.

    ``paramwise_cfg=dict(num_layers=<the encoder's depth>, decay_rate=0.65)``. Frozen parameters are
    left out of the optimizer.
    """

    def add_params(self, params: list[dict], module, **kwargs) -> None:
        num_layers = self.paramwise_cfg["num_layers"]
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
