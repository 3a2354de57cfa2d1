"""Training settings shared by the PE detection configs: AdamW with PE layer-wise lr decay (over as
many layers as the built model's PE backbone has blocks), and ViTDet's step schedule (100 COCO epochs
= 184375 iterations of 64 images, steps at ~89% and ~96%, 250 warm-up iterations) scaled to a number
of epochs."""

from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from pe_dense.integrations.detectron2 import pe_optimizer_params

ITERS_PER_100_EPOCHS = 184375
MILESTONES_PER_100_EPOCHS = (163889, 177546)

train = model_zoo.get_config("common/train.py").train
train.amp.enabled = True
train.ddp.fp16_compression = True


def step_schedule(max_iter: int, milestones, warmup_iters: int = 250):
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=list(milestones),
                                             num_updates=max_iter),
        warmup_length=warmup_iters / max_iter,
        warmup_factor=0.001,
    )


def epochs(count: int) -> tuple:
    """(max_iter, milestones) of ViTDet's COCO schedule scaled from 100 to ``count`` epochs."""
    return ITERS_PER_100_EPOCHS * count // 100, [m * count // 100 for m in MILESTONES_PER_100_EPOCHS]


def adamw(lr: float, lr_decay_rate: float):
    """AdamW at ``lr`` with PE layer-wise lr decay; the depth comes from the model set as ``params.model``."""
    optimizer = model_zoo.get_config("common/optim.py").AdamW
    optimizer.lr = lr
    optimizer.params = L(pe_optimizer_params)(base_lr="${..lr}", lr_decay_rate=lr_decay_rate, overrides={},
                                              weight_decay_norm=None)
    return optimizer
