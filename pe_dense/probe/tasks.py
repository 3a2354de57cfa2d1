"""The three frozen-feature tasks of the PE paper's dense table (docs/protocols.md#the-frozen-feature-probe):
which config or protocol runs each, on which data, and which metric its row shows. Each task's protocol is
stated once here and applies to every encoder alike, PE or timm (docs/comparison.md)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

from .. import configs
from ..models import PEVisionConfig, TimmConfig, stage_end_blocks
from ..tracking import PropagationConfig
from ..tracking.tracker import PROTOCOL_SHORT_SIDE

Config = Union[PEVisionConfig, TimmConfig]

# The probes' total training batch (docs/protocols.md#ade20k-linear-probe; the depth probe's too): the configs
# give 2 per GPU for 8 GPUs, the probe splits it over however many processes run.
PROTOCOL_BATCH = 16

# --smoke: a few iterations on the first images of the built-in data (generated in seconds where absent), with
# a checkpoint halfway, so that an interrupted smoke run resumes mid-task as a real one does; the moving-shapes
# video is tracked at its own size (240 x 320) instead of the protocol's 480 px short side.
SMOKE_ITERATIONS = 10
SMOKE_CHECKPOINT_INTERVAL = 5
SMOKE_TRAIN_IMAGES = 32
SMOKE_VAL_IMAGES = 16
SMOKE_SHORT_SIDE = 240
SMOKE_RESOLUTION = "the built-in images at their own size, padded up to a multiple of the patch (--smoke)"

# ADE20k's crops and sliding windows are 512 px, padded up to a multiple of the patch (518 for patch 14, as
# DINOv2 pads); the windows overlap by a third.
PROTOCOL_CROP = 512


def sliding_window(patch_size: int) -> tuple[int, int]:
    """(window side, stride) of ADE20k's sliding-window evaluation for an encoder of this patch size."""
    side = math.ceil(PROTOCOL_CROP / patch_size) * patch_size
    return side, side * 2 // 3


def _last_block(config: Config) -> tuple[int, ...]:
    return (config.depth - 1,)


@dataclass(frozen=True)
class Protocol:
    """How a task reads and judges an encoder, whichever it is; the report states it. The numbers come
    from their one source (the shipped configs, PropagationConfig), the training schedule from the config
    the job loads."""

    layers: str  # which blocks (Task.protocol_layers picks them for a given depth)
    resolution: str  # relative to the patch size
    head: str
    schedule: str = "none: zero-shot"  # mmseg tasks: filled in from the loaded config

    def statement(self, **changes) -> dict:
        return {**asdict(self), **changes}


def short_side_rule(side: int) -> str:
    """DAVIS's resolution policy at a short side of ``side`` px."""
    return f"short side {side} px, both sides rounded to multiples of the patch"


_PROPAGATION = PropagationConfig()
PROTOCOLS = {
    "ade20k": Protocol(
        "the last block",
        f"train crops {PROTOCOL_CROP} px (scale jitter 0.5-2 of 2048x512), test at short side 512 in sliding "
        f"windows of {PROTOCOL_CROP} px, stride 2/3; crops and windows padded up to a multiple of the patch",
        "frozen encoder; BatchNorm + 1x1 conv on the map, bilinear upsampling, single scale"),
    "nyu": Protocol(
        "four evenly spaced blocks (stage ends), each with the class token where the model has one",
        "train crops 480x480, test on the whole 480x640 image, padded up to a multiple of the patch",
        "frozen encoder; maps upsampled x4, BatchNorm + 1x1 conv into depth bins, score-weighted (DINOv2's lin. 4)"),
    "davis": Protocol(
        "the last block, L2-normalised per token",
        short_side_rule(PROTOCOL_SHORT_SIDE),
        f"label propagation: the first frame + {_PROPAGATION.context} previous frames, the top {_PROPAGATION.topk} "
        f"sources within {_PROPAGATION.radius} tokens, weights exp(cos / {_PROPAGATION.temperature})"),
}


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str  # what a real run scores on
    smoke_dataset: str  # what --smoke scores on
    metric: str  # the key of the headline metric in the task's results
    metric_label: str
    decimals: int
    protocol_layers: Callable[[Config], tuple[int, ...]]  # the blocks the protocol reads
    config: str = ""  # the shipped mmsegmentation config (pe_dense.configs) per size ({size}: T, S, B, L or G)
    smoke_config: str = ""

    @property
    def uses_mmseg(self) -> bool:
        return bool(self.config)

    @property
    def protocol(self) -> Protocol:
        return PROTOCOLS[self.name]

    def config_path(self, size: str, smoke: bool) -> Path:
        return configs.get(self.smoke_config if smoke else self.config.format(size=size))


TASKS = {task.name: task for task in (
    Task("ade20k", "ADE20k val, linear probe", "built-in scenes, linear probe", "mIoU", "mIoU", 1, _last_block,
         "segmentation/ade20k/linear_PEspatial_{size}_ade20k.py", "segmentation/scenes/linear_PEspatial_T_scenes.py"),
    Task("nyu", "NYU-Depth-v2 test, linear bins", "built-in depth scenes, linear bins", "rmse", "RMSE (m), lower is "
         "better", 3, stage_end_blocks, "depth/nyu/linear_PEspatial_{size}_nyu.py",
         "depth/scenes/linear_PEspatial_T_scenes.py"),
    Task("davis", "DAVIS 2017 val, label propagation", "built-in moving shapes, label propagation", "J&F-Mean", "J&F",
         1, _last_block),
)}


def parse_tasks(names: Sequence[str]) -> list[Task]:
    """The named tasks, each once, in the table's order (the DAVIS propagation, which runs on one process,
    last)."""
    unknown = sorted(set(names) - set(TASKS))
    if unknown or not names:
        raise ValueError(f"unknown task(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(TASKS)}")
    return [task for name, task in TASKS.items() if name in names]
