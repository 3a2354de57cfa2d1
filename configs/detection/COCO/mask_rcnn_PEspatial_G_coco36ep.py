"""PE-Spatial-G Mask R-CNN on COCO, 36 epochs: the published recipe (docs/detection.md#vitdet-mask-r-cnn).

Initialised from the released encoder (patch 14 converted to 16 on load). To evaluate the released
detector: --eval-only train.init_checkpoint=hf://facebook/PE-Detection:mask_rcnn_PEspatial_G_coco36ep.pth
"""

from ..common.coco_loader_lsj import dataloader
from ..common.mask_rcnn_pe import model  # noqa: F401 (the config)
from ..common.schedule import adamw, epochs, step_schedule, train

train.init_checkpoint = "pe://PE-Spatial-G14-448"
train.output_dir = "outputs/mask_rcnn_PEspatial_G_coco36ep"
train.max_iter, _milestones = epochs(36)
lr_multiplier = step_schedule(train.max_iter, _milestones)
optimizer = adamw(lr=5e-5, lr_decay_rate=0.9)
dataloader.train.total_batch_size = 64

