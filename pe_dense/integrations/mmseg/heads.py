"""The linear head of frozen-feature probes (DINOv2's ``BNHead``): BatchNorm then a 1x1 convolution."""

from __future__ import annotations

from typing import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


@MODELS.register_module()
class LinearProbeHead(BaseDecodeHead):
    """Per-token linear classification of one or several backbone maps, concatenated along channels
    (resized to the first map's size), after a BatchNorm; the logits are upsampled bilinearly by the
    segmentor (to the labels in training, to the image in inference).

    Args:
        in_channels: channels of each selected map (a list when several are concatenated).
        in_index: which backbone outputs to use.
        norm_cfg: the normalisation before the classifier (``SyncBN`` for multi-GPU runs; the Runner
            turns it into ``BN`` when not distributed).
        **kwargs: as :class:`mmseg.models.decode_heads.decode_head.BaseDecodeHead` (``num_classes``,
            ``loss_decode``, ``dropout_ratio`` ...). ``channels`` is the concatenated width.
    """

    def __init__(self, in_channels: Sequence[int] | int, in_index: Sequence[int] | int = -1,
                 norm_cfg: dict = dict(type="SyncBN", requires_grad=True), dropout_ratio: float = 0.0, **kwargs):
        several = isinstance(in_channels, (list, tuple))
        channels = sum(in_channels) if several else in_channels
        super().__init__(in_channels, channels, in_index=in_index, dropout_ratio=dropout_ratio,
                         input_transform="resize_concat" if several else None, norm_cfg=norm_cfg, **kwargs)
        self.bn = build_norm_layer(norm_cfg, channels)[1]

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
