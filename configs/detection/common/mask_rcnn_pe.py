"""ViTDet Mask R-CNN with a PE backbone, as in the released PE detectors (docs/detection.md#vitdet-mask-r-cnn).

``model`` is PE-Spatial-G at 1024 px: patch 14 -> 16, window 32 with global blocks 12/24/36/49
(``stage_end_blocks``), RoPE rescaled to the encoder's 32-token pretraining grid (PEBackbone derives
it from the model), position table tiled, drop path 0.5, activation checkpointing,
SimpleFeaturePyramid (4, 2, 1, 0.5) with 256 LN channels and a max-pool top level, pixel mean = std
= 127 on RGB. ``pe_pyramid`` builds the same backbone for other PE models.
"""

from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling import SimpleFeaturePyramid
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from pe_dense.integrations.detectron2 import PEBackbone
from pe_dense.models import stage_end_blocks


def pe_pyramid(model_name: str, *, global_blocks, drop_path_rate: float, window_size: int = 32,
               image_size: int = 1024, use_act_checkpoint: bool = True, out_channels: int = 256):
    """SimpleFeaturePyramid over a windowed PE backbone with patch 16 (converted on load if 14); the
    backbone rescales RoPE to the pretraining grid of whichever model ``net.model`` names."""
    return L(SimpleFeaturePyramid)(
        net=L(PEBackbone)(
            model=model_name,
            patch_size=16,
            window_size=window_size,
            global_blocks=list(global_blocks),
            pos_embed_mode="tile",
            drop_path_rate=drop_path_rate,
            use_act_checkpoint=use_act_checkpoint,
            out_feature="last_feat",
        ),
        in_feature="${.net.out_feature}",
        out_channels=out_channels,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        top_block=L(LastLevelMaxPool)(),
        norm="LN",
        square_pad=image_size,
    )


model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
model.pixel_mean = [127.0, 127.0, 127.0]
model.pixel_std = [127.0, 127.0, 127.0]
model.input_format = "RGB"
model.backbone = pe_pyramid("PE-Spatial-G14-448", global_blocks=stage_end_blocks("PE-Spatial-G14-448"),
                            drop_path_rate=0.5)
