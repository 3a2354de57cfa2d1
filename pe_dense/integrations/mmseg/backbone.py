"""The PE encoder (or a timm ViT, ``timm:NAME``) as an mmsegmentation backbone: dense maps of chosen layers,
frozen or fine-tuned."""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from ...models import build_encoder


@MODELS.register_module()
class PEBackbone(BaseModule):
    """A PE vision tower built by :func:`pe_dense.build_encoder`, returning the (B, C, H/p, W/p) maps
    after the blocks in ``out_indices`` (negative counts from the end), or (map, class token) pairs.

    The encoder sits under ``encoder``, with the parameter names of the released checkpoints, so the
    segmentor's keys are ``backbone.encoder.<PE key>`` (``backbone.encoder.model.<timm key>`` for a timm
    model). Blocks after the deepest output are dropped.

    Args:
        model: a model name (``pe_dense.list_models()``), or ``timm:NAME`` for a timm ViT.
        weights: a checkpoint path (official, timm or safetensors layout), ``"hub"`` or ``hf://repo:file``;
            None for random weights.
        out_indices: blocks whose maps are returned, in this order.
        frozen: a probe's backbone: no gradients, always in eval mode, run under ``torch.no_grad``.
        drop_path_rate: stochastic depth for fine-tuning.
        with_cp: recompute block activations in the backward pass (activation checkpointing).
        output_cls_token: return (map, (B, C) class token) pairs, for heads that use the class token
            (models without one, such as PE-Spatial-G, refuse this).
        **options: other build options of the encoder (``keep_blocks``, ``pos_embed_mode``, ...).
    """

    def __init__(self, model: str, weights: Optional[str] = None, out_indices: Sequence[int] = (-1,),
                 frozen: bool = False, drop_path_rate: float = 0.0, with_cp: bool = False,
                 output_cls_token: bool = False, init_cfg: Optional[dict] = None, **options):
        super().__init__(init_cfg)
        self.encoder = build_encoder(model, weights, drop_path_rate=drop_path_rate, **options)
        self.out_indices = tuple(self.encoder.layer_index(i) for i in out_indices)
        if not self.out_indices:
            raise ValueError("out_indices is empty")
        self.encoder.truncate(max(self.out_indices))  # unused blocks would idle in DDP and the optimizer
        self.encoder.set_grad_checkpointing(with_cp and not frozen)
        if output_cls_token and not self.encoder.use_cls_token:
            raise ValueError(f"{model} has no class token: output_cls_token must be False")
        self.output_cls_token = output_cls_token
        self.frozen = frozen
        if frozen:
            self.encoder.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "PEBackbone":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # a probe's features do not depend on the batch or on drop path
        return self

    def forward(self, images: torch.Tensor) -> tuple:
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            return tuple(self.encoder.dense_features_at(images, self.out_indices,
                                                        return_cls_token=self.output_cls_token))
