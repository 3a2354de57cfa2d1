"""Stage 4 of the released recipe, the published model (65.2 box AP on COCO val2017): COCO, 3 more
epochs at 1824 px (lr x0.1 after 2), batch 64, SGD with momentum 0.9 at lr 5e-5, no drop path,
the encoder in bf16, from stage 3.

To evaluate the released detector (65.2 AP published), and with its test-time augmentation (66.0:
2000 queries, soft-NMS in every view, flip x 4 sizes):
    tools/train_net.py --config-file projects/DETA/configs/deta_PEspatial_G_coco_1824.py --eval-only \
        train.init_checkpoint=hf://facebook/PE-Detection:deta_coco_1824pix.pth
    tools/train_net.py --config-file projects/DETA/configs/deta_PEspatial_G_coco_1824.py --eval-only --tta \
        train.init_checkpoint=hf://facebook/PE-Detection:deta_coco_1824pix.pth \
        model.transformer.num_queries=2000 model.use_soft_nms=True
"""

from pe_deta.optim import ClippedSGD

from .common.deta_pe import COCO_TRAIN_IMAGES, deta_optimizer, epoch_schedule, use_image_size
from .deta_PEspatial_G_coco_1728 import dataloader, model, train

use_image_size(model, dataloader, 1824)
model.backbone.net.drop_path_rate = 0.0
train.init_checkpoint = "outputs/deta_PEspatial_G_coco_1728/model_final.pth"
train.output_dir = "outputs/deta_PEspatial_G_coco_1824"
train.max_iter, lr_multiplier = epoch_schedule(3, 2, COCO_TRAIN_IMAGES, 64)
optimizer = deta_optimizer(lr=5e-5, backbone_lr=5e-5, optimizer_class=ClippedSGD, momentum=0.9)
