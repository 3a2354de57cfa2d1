"""Stage 1 of the released recipe: Objects365 v2, 12 epochs at 1024 px (lr x0.1 after 10), from the
released PE-Spatial-G encoder (patch 14 -> 16, its 32 x 32 position table resized to 24 x 24 on
load), batch 256 (128 GPUs x 2), AdamW lr 2e-4 everywhere, drop path 0.5.
"""

from pe_deta.datasets import register_objects365

from .common.deta_pe import (
    OBJECTS365_TRAIN_IMAGES,
    dataloader,
    deta_optimizer,
    epoch_schedule,
    model,
    train,
    use_image_size,
)

register_objects365()
use_image_size(model, dataloader, 1024)
model.backbone.net.drop_path_rate = 0.5
model.num_classes = 365
model.released_class_ids = list(range(1, 366))  # released heads: one row per category id 0..365, ids start at 1
dataloader.train.dataset.names = "objects365_v2_train"
dataloader.test.dataset.names = "objects365_v2_val"
dataloader.train.total_batch_size = 256

train.init_checkpoint = "pe://PE-Spatial-G14-448"
train.output_dir = "outputs/deta_PEspatial_G_o365_1024"
train.max_iter, lr_multiplier = epoch_schedule(12, 10, OBJECTS365_TRAIN_IMAGES, 256)
optimizer = deta_optimizer(lr=2e-4, backbone_lr=2e-4)
