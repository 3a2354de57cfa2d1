"""The segmentation and depth probes: the project's linear-probe config for the model's size (a timm model
takes the B config's), fitted to the encoder (width, patch, normalisation, class token), its layers and the
data, trained and scored by mmengine's Runner (resuming from the work dir's last checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..models import TimmConfig
from .published import model_size
from .tasks import (
    PROTOCOL_BATCH,
    SMOKE_CHECKPOINT_INTERVAL,
    SMOKE_ITERATIONS,
    SMOKE_TRAIN_IMAGES,
    SMOKE_VAL_IMAGES,
    Config,
    Task,
    sliding_window,
)

LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
TIMM_CONFIG_SIZE = "B"  # every size's config is the same protocol once fitted to the encoder; B's has patch 16


def overrides(task: Task, config: Config, weights: Path, layers: tuple[int, ...], data: Optional[Path],
              smoke: bool, processes: int) -> dict:
    """Config overrides: the model (any PE model of the config's size, any timm ViT, or any model with
    --smoke, whose config is the tiny model's), its weights and normalisation, the patch's padding and
    sliding windows, the head on ``layers``, the dataset (``data``; None: the config's built-in data), the
    protocol's total batch over ``processes`` and, with ``smoke``, the few iterations on the built-in
    data's own batch."""
    if not smoke and PROTOCOL_BATCH % processes:
        raise ValueError(f"the probes train at a total batch of {PROTOCOL_BATCH}, which {processes} processes "
                         f"cannot share evenly")
    several = len(layers) > 1
    options = {
        "model.backbone.model": config.name,
        "model.backbone.weights": str(weights),
        "model.backbone.out_indices": layers,
        "model.decode_head.in_channels": [config.width] * len(layers) if several else config.width,
        "model.decode_head.in_index": list(range(len(layers))) if several else -1,
        "model.data_preprocessor.size_divisor": config.patch_size,
        "model.data_preprocessor.test_cfg.size_divisor": config.patch_size,
        # the encoder's own normalisation, on mmseg's 0-255 pixels (PE's: 127.5 and 127.5)
        "model.data_preprocessor.mean": [255 * m for m in config.pixels.mean],
        "model.data_preprocessor.std": [255 * s for s in config.pixels.std],
    }
    if task.name == "ade20k" and not smoke:  # the smoke config scores whole images
        side, stride = sliding_window(config.patch_size)
        options.update({"model.test_cfg.crop_size": (side, side), "model.test_cfg.stride": (stride, stride)})
    if task.name == "nyu":  # the class token goes with each map where the model has one (DINOv2's probe)
        options["model.backbone.output_cls_token"] = config.use_cls_token
        options["model.decode_head.cls_token"] = config.use_cls_token
    if data is not None:
        options.update({f"{loader}.dataset.data_root": str(data) for loader in LOADERS})
    if smoke:
        options.update({"train_cfg.max_iters": SMOKE_ITERATIONS,
                        "default_hooks.checkpoint.interval": SMOKE_CHECKPOINT_INTERVAL,
                        "default_hooks.logger.interval": SMOKE_CHECKPOINT_INTERVAL,
                        "train_dataloader.dataset.num_images": SMOKE_TRAIN_IMAGES,
                        "val_dataloader.dataset.num_images": SMOKE_VAL_IMAGES,
                        # loading in the main process: worker processes cost more than they save here
                        **{f"{loader}.{key}": value for loader in LOADERS[:2]
                           for key, value in (("num_workers", 0), ("persistent_workers", False))}})
    else:
        options["train_dataloader.batch_size"] = PROTOCOL_BATCH // processes
    return options


def prepare(task: Task, config: Config, weights: Path, layers: tuple[int, ...], data: Optional[Path],
            smoke: bool, launcher: str, work_dir: Path):
    """The task's mmengine config, resuming in ``work_dir``, once its datasets are found on disk (nothing
    is written)."""
    from ..integrations.mmseg.training import check_datasets, load_config

    path = task.config_path(TIMM_CONFIG_SIZE if isinstance(config, TimmConfig) else model_size(config.name), smoke)
    processes = int(os.environ.get("WORLD_SIZE", "1")) if launcher != "none" else 1  # torchrun sets WORLD_SIZE
    cfg = load_config(str(path), work_dir=str(work_dir), resume=True, launcher=launcher,
                      cfg_options=overrides(task, config, weights, layers, data, smoke, processes))
    check_datasets(cfg, ["train_dataloader", "val_dataloader"], option=f"--data {task.name}=PATH")
    return cfg


def schedule(cfg, smoke: bool) -> str:
    """The training schedule ``cfg`` runs, for the report."""
    optimizer, warm_up = cfg.optim_wrapper.optimizer, cfg.param_scheduler[0]
    warm = f", {warm_up.end} warm-up iterations" if warm_up.type == "LinearLR" else ""
    batch = cfg.train_dataloader.batch_size if smoke else PROTOCOL_BATCH
    return (f"{optimizer.type} lr {optimizer.lr:g}, weight decay {optimizer.weight_decay:g}{warm}, poly decay to "
            f"{cfg.train_cfg.max_iters} iterations at batch {batch}")


def run(cfg) -> tuple[dict[str, float], Optional[str]]:
    """(the final model's validation metrics, the checkpoint training continued from or None)."""
    from ..integrations.mmseg.training import train_then_validate

    last = Path(cfg.work_dir) / "last_checkpoint"  # mmengine's pointer to the newest checkpoint
    resumed = Path(last.read_text().strip()).name if last.is_file() else None
    return train_then_validate(cfg), resumed
