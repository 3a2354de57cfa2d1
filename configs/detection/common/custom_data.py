"""What the custom-data templates (configs/detection/custom/) share: the COCO-format files they train on,
set on the command line (``custom_data.train_json=... custom_data.train_images=...``, the same for ``val``)
and checked by tools/train_net.py, which takes the classes from the json (docs/custom_data.md); and a
schedule for datasets of hundreds to thousands of images.

The schedule is a starting point, not a measured recipe: batch 16 with the COCO recipe's AdamW lr scaled by
the square root of 16/64 (the usual rule for Adam-type optimizers), 5000 iterations with 5% warm-up then
cosine decay (so ``train.max_iter=N`` keeps a sound schedule), evaluation and a checkpoint every 1000.
"""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

custom_data = dict(train_json="", train_images="", val_json="", val_images="")
COCO_BATCH = 64


def small_data_schedule(train, dataloader, optimizer, output_dir: str, max_iter: int = 5000, batch_size: int = 16):
    """Set the template's batch, lr, iterations and output folder; returns its lr_multiplier."""
    dataloader.train.total_batch_size = batch_size
    optimizer.lr = optimizer.lr * (batch_size / COCO_BATCH) ** 0.5
    train.max_iter = max_iter
    train.eval_period = train.checkpointer.period = 1000
    train.output_dir = output_dir
    return L(WarmupParamScheduler)(scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
                                   warmup_length=0.05, warmup_factor=0.001)
