"""Stage 3 of the released recipe: COCO, 12 epochs at 1728 px (lr x0.1 after 10), batch 64 (64 GPUs
x 1), AdamW lr 5e-5, drop path 0.4, the encoder in bf16, from stage 2 (its Objects365 class heads
do not fit COCO's and are left at their initialisation, as the released fine-tuning does)."""

from .common.deta_pe import COCO_TRAIN_IMAGES, dataloader, deta_optimizer, epoch_schedule, model, train, use_image_size

use_image_size(model, dataloader, 1728)
model.backbone.net.drop_path_rate = 0.4
model.backbone.bf16 = True
dataloader.train.total_batch_size = 64
train.init_checkpoint = "outputs/deta_PEspatial_G_o365_1536/model_final.pth"
train.output_dir = "outputs/deta_PEspatial_G_coco_1728"
train.max_iter, lr_multiplier = epoch_schedule(12, 10, COCO_TRAIN_IMAGES, 64)
optimizer = deta_optimizer(lr=5e-5, backbone_lr=5e-5)
