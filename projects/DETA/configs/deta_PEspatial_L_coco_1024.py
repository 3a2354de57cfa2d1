"""DETA with the smaller PE-Spatial-L14-448 on COCO at 1024 px: not published. The detector and
optimiser are the released G recipe's COCO stage (12 epochs, lr x0.1 after 10, AdamW 5e-5 for the
transformer); the encoder takes the settings of our L Mask R-CNN (window 32, four evenly spaced global
blocks, RoPE and position table on its own 32-token grid, drop path 0.4) and, without Objects365
pre-training, the transformer's lr of the released first stage (2e-4)."""

from pe_dense.models import stage_end_blocks

from .common.deta_pe import COCO_TRAIN_IMAGES, dataloader, deta_optimizer, epoch_schedule, model, train, use_image_size

model.backbone.net.update(model="PE-Spatial-L14-448", window_size=32,
                          global_blocks=list(stage_end_blocks("PE-Spatial-L14-448")),
                          rope_pretrain_grid="auto",  # the encoder's own 32-token grid
                          drop_path_rate=0.4)
use_image_size(model, dataloader, 1024)
dataloader.train.total_batch_size = 64
train.init_checkpoint = "pe://PE-Spatial-L14-448"
train.output_dir = "outputs/deta_PEspatial_L_coco_1024"
train.max_iter, lr_multiplier = epoch_schedule(12, 10, COCO_TRAIN_IMAGES, 64)
optimizer = deta_optimizer(lr=2e-4, backbone_lr=5e-5)
