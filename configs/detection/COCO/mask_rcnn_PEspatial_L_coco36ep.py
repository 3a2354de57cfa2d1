"""PE-Spatial-L14-448 Mask R-CNN on COCO, 36 epochs.

PE published detection only for G. For the distilled L this keeps PE's recipe (1024 px LSJ, window 32,
36 epochs) and takes ViTDet's settings for a 24-block ViT: 4 evenly spaced global blocks, drop
path 0.4, lr 1e-4, layer-wise lr decay 0.8.
"""

from pe_dense.models import stage_end_blocks

from ..common.mask_rcnn_pe import pe_pyramid
from ..common.schedule import adamw
from .mask_rcnn_PEspatial_G_coco36ep import dataloader, lr_multiplier, model, train  # noqa: F401 (the config)

model.backbone = pe_pyramid("PE-Spatial-L14-448", global_blocks=stage_end_blocks("PE-Spatial-L14-448"),
                            drop_path_rate=0.4)
train.init_checkpoint = "pe://PE-Spatial-L14-448"
train.output_dir = "outputs/mask_rcnn_PEspatial_L_coco36ep"
optimizer = adamw(lr=1e-4, lr_decay_rate=0.8)
