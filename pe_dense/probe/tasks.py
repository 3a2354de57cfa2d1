"""The three frozen-feature tasks of the PE paper's dense table (docs/protocols.md#the-frozen-feature-probe):
which config or protocol runs each, on which data, and which metric its row shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .. import configs
from ..models import PEVisionConfig, stage_end_blocks

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


def _last_block(config: PEVisionConfig) -> tuple[int, ...]:
    return (config.depth - 1,)


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str  # what a real run scores on
    smoke_dataset: str  # what --smoke scores on
    metric: str  # the key of the headline metric in the task's results
    metric_label: str
    decimals: int
    protocol_layers: Callable[[PEVisionConfig], tuple[int, ...]]  # the blocks the protocol reads
    config: str = ""  # the shipped mmsegmentation config (pe_dense.configs) per size ({size}: T, S, B, L or G)
    smoke_config: str = ""

    @property
    def uses_mmseg(self) -> bool:
        return bool(self.config)

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
