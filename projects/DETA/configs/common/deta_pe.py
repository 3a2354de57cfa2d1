"""DETA on PE-Spatial-G as released for COCO (the DETA-for-PE code; see projects/DETA/README.md).

``model``: the PE-Spatial-G encoder at patch 16 with a 24 x 24 position table tiled over the input,
window 24 with global blocks 12/24/36/49 (``stage_end_blocks``), RoPE positions rescaled to a 16-token
grid (what the released backbone does, given explicitly: the encoder's own grid is 32), layerscale,
activation checkpointing; strides 8/16/32 from its last block, two more conv levels; a 6 + 6 layer
deformable transformer (width 256, 8 heads, 4 points, 5 levels, FFN 2048, no dropout), 900 queries,
two-stage proposals chosen per level, IoU assignment in both stages, focal/L1/GIoU losses weighted
1/5/2; NMS at 0.7, 100 detections. Inputs are padded to a
square of ``image_size`` and normalised with ImageNet's mean and std (RGB), as released.

``dataloader``: COCO with DETR's augmentation at this size (flip; either a random short side from
480 to image_size - 32, or a random 400-600 resize, a 384-600 crop and a resize to image_size - 32);
testing at a short side of image_size - 32.

``optimizer``/``lr_multiplier``: ``deta_optimizer`` and ``epoch_schedule`` below; the stage configs
set the learning rates.
"""

from functools import partial

import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from fvcore.common.param_scheduler import MultiStepParamScheduler

from pe_dense.integrations.detectron2 import PEBackbone, pe_optimizer_params
from pe_dense.models import stage_end_blocks
from pe_deta.augmentation import RandomChoice
from pe_deta.backbone import PESimplePyramid, encoder_config
from pe_deta.criterion import DETACriterion
from pe_deta.meta_arch import DETA
from pe_deta.optim import ClippedAdamW, lr_factor
from pe_deta.transformer import DeformableTransformer
from pe_deta.tta import DETAWithTTA

image_size = 1824
COCO_TRAIN_IMAGES = 117266  # train2017 images with annotations
OBJECTS365_TRAIN_IMAGES = 1742289  # Objects365 v2 training images

model = L(DETA)(
    backbone=L(PESimplePyramid)(
        net=L(PEBackbone)(
            model=L(encoder_config)(model="PE-Spatial-G14-448", position_grid=24),
            patch_size=16,
            window_size=24,
            global_blocks=list(stage_end_blocks("PE-Spatial-G14-448")),
            rope_pretrain_grid=16,  # the released backbone's, not the encoder's 32
            pos_embed_mode="tile",
            drop_path_rate=0.0,
            use_act_checkpoint=True,
        ),
        square_pad=image_size,
    ),
    transformer=L(DeformableTransformer)(
        d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048, dropout=0.0,
        num_feature_levels=5, enc_n_points=4, dec_n_points=4, num_queries=900,
    ),
    criterion=L(DETACriterion)(num_classes="${..num_classes}", num_queries="${..transformer.num_queries}"),
    num_classes=80,
    # the released COCO heads score the 91 COCO category ids; detectron2 numbers the 80 classes 0..79
    released_class_ids=[c["id"] for c in COCO_CATEGORIES if c["isthing"]],
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
)


def detr_augmentation(size: int, train_min: int = 480):
    """DETR's training augmentation at ``size`` (the released code's, ending at ``size - 32``)."""
    longest = size - 32
    return [
        L(T.RandomFlip)(horizontal=True),
        L(RandomChoice)(choices=[
            [L(T.ResizeShortestEdge)(short_edge_length=list(range(train_min, longest, 32)), max_size=longest,
                                     sample_style="choice")],
            [L(T.ResizeShortestEdge)(short_edge_length=[400, 500, 600], sample_style="choice"),
             L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
             L(T.ResizeShortestEdge)(short_edge_length=longest, max_size=longest)],
        ]),
    ]


def use_image_size(model, dataloader, size: int) -> None:
    """Train and test at ``size``: square padding, DETR augmentation, test short side ``size - 32``."""
    model.backbone.square_pad = size
    dataloader.train.mapper.augmentations = detr_augmentation(size)
    dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=size - 32, max_size=size - 32)]


dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.recompute_boxes = False
dataloader.train.total_batch_size = 64
dataloader.test.mapper.image_format = "RGB"
use_image_size(model, dataloader, image_size)


def deta_optimizer(lr: float, backbone_lr: float, *, lr_decay_rate: float = 1.0,
                   weight_decay: float = 1e-4, clip_max_norm: float = 0.1, optimizer_class=ClippedAdamW, **kwargs):
    """The released optimiser: ``lr`` for the transformer and heads, lr / 10 for sampling offsets,
    ``backbone_lr`` for the backbone (kept as a fraction of ``lr`` when ``optimizer.lr`` is overridden),
    weight decay on every parameter, gradient norm clipped at 0.1. Layer decay runs over as many layers
    as the built model's PE backbone has blocks.

    The released scripts pass a layer decay of 0.9, but their code applies it only to another
    backbone family, so the released models trained without one: ``lr_decay_rate=1.0`` reproduces that.
    """
    return L(optimizer_class)(
        params=L(pe_optimizer_params)(
            base_lr="${..lr}",
            lr_decay_rate=lr_decay_rate,
            lr_factor_func=partial(lr_factor, backbone_ratio=backbone_lr / lr),
            weight_decay_norm=None,
        ),
        lr=lr,
        weight_decay=weight_decay,
        clip_max_norm=clip_max_norm,
        **kwargs,
    )


def epoch_schedule(epochs: int, drop_epoch: int, images_per_epoch: int, batch_size: int):
    """(max_iter, lr_multiplier): constant, then x0.1 after ``drop_epoch`` epochs (the released StepLR)."""
    iters_per_epoch = -(-images_per_epoch // batch_size)
    max_iter = epochs * iters_per_epoch
    return max_iter, L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[drop_epoch * iters_per_epoch],
                                                num_updates=max_iter)


# The released TTA of the 1824 model (longer side 1792 = its test size, then 1728, 1536, 1344; boxes under
# 64 x 64 px dropped from the two smallest), used by `tools/train_net.py --eval-only --tta`.
tta = L(DETAWithTTA)(sizes=[1792, 1728, 1536, 1344], size_ranges=[[0, 10000], [0, 10000], [64, 10000], [64, 10000]])

train = model_zoo.get_config("common/train.py").train
train.amp.enabled = False  # the released recipe runs only the encoder in bf16 (backbone.bf16), not fp16 AMP
train.ddp.find_unused_parameters = False
train.checkpointer.period = 5000
train.eval_period = 0
