"""The PE encoder as DETA's backbone: the last block's map turned into strides 8, 16 and 32.

As in the released DETA-for-PE code: a 2x transposed convolution (half the channels) for stride 8,
the map itself for stride 16 and a 2x2 max-pool for stride 32; the detector adds its own input
projections and two more strided levels. The encoder is pe_dense's one encoder module
(:class:`pe_dense.integrations.detectron2.PEBackbone`), with the options the released DETA backbone
uses: windowed blocks with a few global ones, a tiled position table and RoPE positions rescaled to
a pretraining grid.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
from detectron2.modeling import Backbone

from pe_dense.integrations.detectron2 import PEBackbone
from pe_dense.models import PEVisionConfig, get_config
from pe_dense.models.inference import autocast


def encoder_config(model: Union[str, PEVisionConfig], position_grid: Optional[int] = None) -> PEVisionConfig:
    """The config of ``model`` with its position table on a ``position_grid`` x ``position_grid`` grid.

    Released DETA-for-PE backbones keep a 24 x 24 table (PE-Spatial-G resized to 384 px at patch 16)
    where the released encoder has 32 x 32; encoder checkpoints are fitted to it on load
    (``pe_deta.checkpoint``).
    """
    config = get_config(model) if isinstance(model, str) else model
    if position_grid is None or position_grid == config.pretrain_grid:
        return config
    return config.replace(name=f"{config.name} with a {position_grid}x{position_grid} position table",
                          image_size=position_grid * config.patch_size)


class PESimplePyramid(Backbone):
    """Maps ``p3``, ``p4``, ``p5`` (strides 8, 16, 32 for patch 16) from a PE encoder's last block.

    Args:
        net: the encoder, a :class:`PEBackbone`.
        square_pad: pad every batch to this square size (the released models train and test on
            fixed squares); 0 pads only to a multiple of 32.
        bf16: run the encoder under bfloat16 autocast (the released G recipe), its maps returned in float32.
    """

    def __init__(self, net: PEBackbone, square_pad: int = 0, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16
        width, patch = net.width, net.patch_size
        self.net = net
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(width, width // 2, kernel_size=2, stride=2))
        self.fpn2 = nn.Identity()
        self.fpn3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self._square_pad = square_pad
        strides = (patch // 2, patch, patch * 2)
        self._out_features = ["p3", "p4", "p5"]
        self._out_feature_strides = dict(zip(self._out_features, strides))
        self._out_feature_channels = dict(zip(self._out_features, (width // 2, width, width)))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.fpn1.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_uniform_(m.weight, a=5**0.5)

    @property
    def padding_constraints(self) -> dict:
        return {"size_divisibility": self._out_feature_strides["p5"], "square_size": self._square_pad}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(images.device, "bf16" if self.bf16 else "fp32"):
            x = self.net.dense_features(images)
        x = x.float()
        return {"p3": self.fpn1(x), "p4": self.fpn2(x), "p5": self.fpn3(x)}
