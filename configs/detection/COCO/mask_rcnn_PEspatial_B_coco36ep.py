"""PE-Spatial-B16-512 Mask R-CNN on COCO, 36 epochs.

PE published detection only for G. For the distilled B this keeps PE's recipe (1024 px LSJ, window 32,
36 epochs) and takes ViTDet's settings for a 12-block ViT: 4 evenly spaced global blocks, drop
path 0.1, lr 1e-4, layer-wise lr decay 0.7.
"""

from pe_dense.models import stage_end_blocks

from ..common.mask_rcnn_pe import pe_pyramid
from ..common.schedule import adamw
from .mask_rcnn_PEspatial_G_coco36ep import dataloader, lr_multiplier, model, train  # noqa: F401 (the config)

model.backbone = pe_pyramid("PE-Spatial-B16-512", global_blocks=stage_end_blocks("PE-Spatial-B16-512"),
                            drop_path_rate=0.1, use_act_checkpoint=False)
train.init_checkpoint = "pe://PE-Spatial-B16-512"
train.output_dir = "outputs/mask_rcnn_PEspatial_B_coco36ep"
optimizer = adamw(lr=1e-4, lr_decay_rate=0.7)
