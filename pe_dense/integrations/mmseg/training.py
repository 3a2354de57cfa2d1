"""What ``tools/train_seg.py`` does before handing a config to mmengine's Runner: apply the command
line, fit the config to the machine, and check that the datasets are there (before any output); and
the train-then-score run of ``pe-dense probe``."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import DATASETS

from ... import configs
from .datasets import PEDepthScenesDataset, PEScenesDataset

logger = logging.getLogger(__name__)
_runs = itertools.count()  # the configs loaded by this process, for their experiment names


def load_config(config: str, *, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
                amp: bool = False, resume: bool = False, launcher: str = "none",
                checkpoint: Optional[str] = None) -> Config:
    """The config with the tool's options applied: work dir (default ``outputs/<config name>``),
    overrides, AMP (only on CUDA; float32 otherwise, with a warning), resume from the work dir's last
    checkpoint, the distributed launcher (gloo without CUDA), and ``checkpoint`` to test."""
    config = str(configs.resolve(config))
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get("experiment_name") is None:
        # mmengine keys a run's logger and message hub by this name and the second the run starts: two runs in
        # one process (the probe's tasks, tests) within a second would otherwise share them, and their log files
        cfg.experiment_name = f"{Path(config).stem}_{next(_runs)}"
    cfg.work_dir = work_dir or cfg.get("work_dir") or os.path.join("outputs", Path(config).stem)
    cfg.launcher = launcher
    if launcher != "none" and not torch.cuda.is_available():
        cfg.env_cfg.dist_cfg = dict(backend="gloo")
    if amp:
        if torch.cuda.is_available():
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
        else:
            logger.warning("--amp needs CUDA: training in float32")
    cfg.resume = resume
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint '{checkpoint}' does not exist")
        cfg.load_from = checkpoint
    return cfg


def check_datasets(cfg: Config, loaders: Sequence[str], option: str = "--cfg-options {loader}.dataset.data_root=PATH"
                   ) -> None:
    """Fail, naming the folder and the ``option`` that sets the dataset's root, when a dataset of the given
    dataloaders is not on disk (the built-in scenes are generated instead)."""
    for name in loaders:
        loader = cfg.get(name)
        if not loader:
            continue
        dataset = loader["dataset"]
        if issubclass(DATASETS.get(dataset["type"]), (PEScenesDataset, PEDepthScenesDataset)):
            continue  # generated on first use
        root = dataset.get("data_root") or ""
        for key, folder in dataset.get("data_prefix", {}).items():
            path = os.path.join(root, folder)
            if not os.path.isdir(path):
                raise FileNotFoundError(
                    f"{name}: the dataset folder '{path}' ({key}) does not exist; set the dataset's root with "
                    f"{option.format(loader=name)}")


def train_then_validate(cfg: Config) -> dict[str, float]:
    """Train ``cfg`` with mmengine's Runner (from the work dir's last checkpoint when ``cfg.resume``), then
    score the final model once on the validation split; the metrics, on every process.

    Validation inside the training loop is switched off: a run resumed after its last iteration (killed
    before it was scored) is then still scored, and no run is scored twice at the end.
    """
    cfg.train_cfg.val_begin = cfg.train_cfg.max_iters + 1
    runner = Runner.from_cfg(cfg)
    runner.train()
    return {name: float(value) for name, value in runner.val_loop.run().items()}
