"""A gradient-matching term for depth training, next to mmseg's ``SiLogLoss``."""

from __future__ import annotations

import kornia
import torch
import torch.nn as nn
from mmseg.registry import MODELS


@MODELS.register_module()
class DepthGradientLoss(nn.Module):
    """Multi-scale gradient matching of log depth (MegaDepth's and MiDaS's term): the mean absolute x
    and y central differences of ``log(pred) - log(target)``, which are zero wherever the prediction's
    edges and slopes follow the ground truth's up to scale, over the pixels whose 3x3 neighbourhood has
    depth (``target > eps``), averaged over ``scales`` (each subsampling the previous by 2).

    Args:
        scales: the number of scales.
        loss_weight: the factor on the loss.
        eps: depths at or below this have no ground truth.
        loss_name: the name in the training log (``loss_`` prefix: it is backpropagated).
    """

    def __init__(self, scales: int = 4, loss_weight: float = 0.5, eps: float = 1e-3, loss_name: str = "loss_grad"):
        super().__init__()
        self.scales, self.loss_weight, self.eps, self._loss_name = scales, loss_weight, eps, loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        valid = (target > self.eps).to(pred.dtype)
        residual = (pred.clamp(min=self.eps).log() - target.clamp(min=self.eps).log()) * valid
        terms = []
        for scale in range(self.scales):
            step = 2**scale
            r, v = residual[..., ::step, ::step], valid[..., ::step, ::step]
            if min(r.shape[-2:]) < 3:  # too small to have an inside
                break
            gradients = kornia.filters.spatial_gradient(r, mode="diff", order=1).abs().sum(2)
            inside = kornia.morphology.erosion(v, torch.ones(3, 3, device=v.device))  # both neighbours valid
            terms.append((gradients * inside).sum() / inside.sum().clamp(min=1))
        return self.loss_weight * torch.stack(terms).mean() if terms else pred.sum() * 0
