"""The optimiser of the released DETA recipe: AdamW (or SGD) with the global gradient norm clipped
before every step, and its per-parameter learning-rate factors."""

from __future__ import annotations

import torch

from pe_dense.models.lr_decay import pe_lr_decay_rate

# Deformable DETR trains the layers that predict sampling positions at a tenth of the learning rate.
SLOW_PARAMETERS = ("sampling_offsets", "reference_points")


def lr_factor(name: str, *, num_layers: int, backbone_ratio: float = 1.0, lr_decay_rate: float = 1.0,
              slow_factor: float = 0.1) -> float:
    """Learning-rate multiplier of parameter ``name``: ``backbone_ratio`` (times PE layer decay over the
    backbone's ``num_layers`` blocks) for the backbone, ``slow_factor`` for sampling-offset projections,
    1 for everything else. Configs pass it to ``pe_optimizer_params``, which reads ``num_layers`` from
    the built model."""
    if name.startswith("backbone."):
        return backbone_ratio * pe_lr_decay_rate(name, lr_decay_rate, num_layers)
    if any(part in name for part in SLOW_PARAMETERS):
        return slow_factor
    return 1.0


class GradientClipping:
    """Mixin for a torch optimiser: clip the gradient norm of all its parameters to ``clip_max_norm``
    (DETR's 0.1) before every step. Under detectron2's AMPTrainer the scaler unscales the gradients
    before ``step``, so the clipping sees true gradients."""

    def __init__(self, params, clip_max_norm: float = 0.1, **kwargs):
        super().__init__(params, **kwargs)
        self.clip_max_norm = clip_max_norm

    @torch.no_grad()
    def step(self, closure=None):
        torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], self.clip_max_norm)
        return super().step(closure)


class ClippedAdamW(GradientClipping, torch.optim.AdamW):
    """AdamW with gradient clipping (the released recipe's default)."""


class ClippedSGD(GradientClipping, torch.optim.SGD):
    """SGD with gradient clipping (the released recipe's last COCO stage, momentum 0.9)."""
