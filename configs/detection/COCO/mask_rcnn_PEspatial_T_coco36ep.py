"""PE-Spatial-T16-512 Mask R-CNN on COCO, 36 epochs.

PE published detection only for G. For the distilled T this keeps PE's recipe (1024 px LSJ, window 32,
36 epochs) and takes ViTDet's settings for a 12-block ViT: 4 evenly spaced global blocks, drop
path 0.1, lr 1e-4, layer-wise lr decay 0.7.
"""

from ..common.mask_rcnn_pe import evenly_spaced_global_blocks, pe_pyramid
from ..common.schedule import adamw
from .mask_rcnn_PEspatial_G_coco36ep import dataloader, lr_multiplier, model, train  # noqa: F401 (the config)

model.backbone = pe_pyramid("PE-Spatial-T16-512", global_blocks=evenly_spaced_global_blocks(12), drop_path_rate=0.1,
                            use_act_checkpoint=False)
train.init_checkpoint = "pe://PE-Spatial-T16-512"
train.output_dir = "output/mask_rcnn_PEspatial_T_coco36ep"
optimizer = adamw(lr=1e-4, lr_decay_rate=0.7, num_layers=12)
