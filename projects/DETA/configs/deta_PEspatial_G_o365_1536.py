"""Stage 2 of the released recipe: Objects365 v2, 6 more epochs at 1536 px (lr x0.1 after 4), batch
128 (128 GPUs x 1), AdamW lr 5e-5, from stage 1."""

from .common.deta_pe import OBJECTS365_TRAIN_IMAGES, deta_optimizer, epoch_schedule, use_image_size
from .deta_PEspatial_G_o365_1024 import dataloader, model, train

use_image_size(model, dataloader, 1536)
dataloader.train.total_batch_size = 128
train.init_checkpoint = "outputs/deta_PEspatial_G_o365_1024/model_final.pth"
train.output_dir = "outputs/deta_PEspatial_G_o365_1536"
train.max_iter, lr_multiplier = epoch_schedule(6, 4, OBJECTS365_TRAIN_IMAGES, 128)
optimizer = deta_optimizer(lr=5e-5, backbone_lr=5e-5)
