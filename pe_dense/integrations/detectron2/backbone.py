"""The PE encoder as a detectron2 ``Backbone`` (ViTDet style), used through ``SimpleFeaturePyramid``."""

from __future__ import annotations

from typing import Literal, Optional, Union

import torch
from detectron2.modeling import Backbone

from ...models import PEVisionConfig, PEVisionTransformer, get_config


class PEBackbone(PEVisionTransformer, Backbone):
    """A PE vision tower returning its last block's map, stride = patch size, as ``{out_feature: map}``.

    It *is* the encoder (same module, same parameter names), so its keys under
    ``backbone.net.`` are those of the released PE detectron2 checkpoints. Runs without the class
    token; the options are those of :class:`PEVisionTransformer` (``window_size``,
    ``global_blocks``, ``pos_embed_mode``, ``patch_size``, ``drop_path_rate``, ``keep_blocks``).

    Args:
        model: a model name (``pe_dense.list_models()``) or a config.
        rope_pretrain_grid: rescale RoPE positions to this grid. ``"auto"`` (the default) takes the
            encoder config's ``pretrain_grid`` (32 for PE-Spatial-G14-448, 14 for PE-Core-B16-224), as
            the released ViTDet backbones do; None keeps integer positions.
        use_act_checkpoint: recompute block activations in the backward pass (saves memory).
        out_feature: the name of the output map (``SimpleFeaturePyramid(in_feature=...)``).
    """

    def __init__(self, model: Union[str, PEVisionConfig], *,
                 rope_pretrain_grid: Union[Optional[int], Literal["auto"]] = "auto",
                 use_act_checkpoint: bool = False, out_feature: str = "last_feat", **options):
        config = get_config(model) if isinstance(model, str) else model
        if rope_pretrain_grid == "auto":
            rope_pretrain_grid = config.pretrain_grid
        super().__init__(config, drop_cls_token=True, rope_pretrain_grid=rope_pretrain_grid, **options)
        self.set_grad_checkpointing(use_act_checkpoint)
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: config.width}
        self._out_feature_strides = {out_feature: self.patch_size}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self._out_features[0]: self.dense_features(images)}
