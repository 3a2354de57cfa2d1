"""A tiny DETA on the built-in shapes dataset, sized for 2 CPU cores.

The first 6 blocks of PE-Spatial-T (window 8, global blocks 2 and 5, as the tiny Mask R-CNN), 256 px
squares, a 3 + 3 layer transformer of width 128 with 100 queries; everything else as the COCO
model (two-stage proposals, IoU assignment, losses, NMS); FFN 256, 850 iterations of 8 images with AdamW
at 4e-4 and a cosine schedule. Trains from random weights by default;
``train.init_checkpoint=pe://PE-Spatial-T16-512`` starts from the released encoder.

Measured on 2 CPU cores: 56.0 box AP on shapes_val, 16 min 17 s of training (1.15 s/iteration), 16 min
42 s for the whole command. While choosing it: FFN 512 with 600 iterations: 35.0 AP; FFN 256 with
1100 iterations: 65.9 AP, but ~21 min of training.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from ..common.deta_pe import dataloader, deta_optimizer, model, train, tta

image_size = 256

model.backbone.net.model = "PE-Spatial-T16-512"
model.backbone.net.keep_blocks = 6
model.backbone.net.window_size = 8
model.backbone.net.global_blocks = [2, 5]
model.backbone.net.rope_pretrain_grid = None
model.backbone.net.pos_embed_mode = "bilinear"
model.backbone.net.use_act_checkpoint = False
model.backbone.square_pad = image_size
model.transformer.update(d_model=128, nhead=8, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=256,
                         num_queries=100)
model.num_classes = 4

dataloader.train.dataset.names = "shapes_train"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.8, max_scale=1.25, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.recompute_boxes = False
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentations = []
dataloader.test.num_workers = 1

tta.sizes = [256, 224, 192]
tta.size_ranges = None

train.init_checkpoint = ""
train.seed = 0
train.output_dir = "outputs/deta_PEspatial_T_shapes"
train.max_iter = 850
train.checkpointer.period = 250
train.log_period = 20
optimizer = deta_optimizer(lr=4e-4, backbone_lr=4e-4)
lr_multiplier = L(WarmupParamScheduler)(scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
                                        warmup_length=0.05, warmup_factor=0.001)
