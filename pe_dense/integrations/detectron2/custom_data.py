"""Detection on one's own COCO-format json files (docs/custom_data.md): a config's ``custom_data`` (the
templates in configs/detection/custom/ have one; ``custom_data.train_json=...`` on the command line adds it
to any config, Mask R-CNN or DETA) is checked (:func:`pe_dense.data.custom.check_coco`), registered with
detectron2's COCO loader, and sets the detector's classes; a json without segmentations trains Mask R-CNN
on boxes only."""

from __future__ import annotations

import logging
from typing import Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ...data.custom import CocoData, DatasetError, Summary, check_coco

logger = logging.getLogger(__name__)
SPLITS = {"train": "train", "val": "test"}  # split: its dataloader


def register_coco_files(json_file: str, image_root: str, split: str) -> tuple[str, CocoData]:
    """Check a COCO-format json with its image folder and register it in detectron2's catalogs under a name
    of its own (``custom:<json file>``, replacing an earlier registration of the file); the name and what
    the check found."""
    data = check_coco(json_file, image_root, split)
    name = f"custom:{data.json_file.resolve()}"
    if name in DatasetCatalog.list():  # the file may have changed since
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(data.json_file), str(data.image_root))
    # What load_coco_json sets on first use, known now for the model and the evaluator
    MetadataCatalog.get(name).set(thing_classes=data.classes,
                                  thing_dataset_id_to_contiguous_id={i: k for k, i in enumerate(data.ids)})
    return name, data


def use_coco_files(cfg, training: bool = True) -> Optional[Summary]:
    """Point ``cfg`` at the COCO files its ``custom_data`` names (``train_json``/``train_images`` when
    ``training``, ``val_json``/``val_images`` always): datasets, number of classes, the mask head (off
    without segmentations in the training json), and the class names kept in ``custom_data.classes``
    for ``pe-dense detect``. Returns the summary, or None without ``custom_data``."""
    files = cfg.get("custom_data")
    if files is None:
        return None
    if not any(files.get(f"{split}_json") for split in SPLITS):
        raise DatasetError("the config trains on your own COCO files: name them with custom_data.train_json=... "
                           "custom_data.train_images=... custom_data.val_json=... custom_data.val_images=...")
    summary, found = None, {}
    for split, loader in SPLITS.items():
        if split == "train" and not training:
            continue
        json_file, image_root = files.get(f"{split}_json"), files.get(f"{split}_images")
        if not json_file or not image_root:
            raise DatasetError(f"custom_data.{split}_json and custom_data.{split}_images name the {split} split's "
                               "COCO json and image folder: give both")
        name, found[split] = register_coco_files(json_file, image_root, split)
        cfg.dataloader[loader].dataset.names = name
        summary = summary or Summary("detection dataset", "instances per class")
        summary.merge(found[split].summary)
    first = next(iter(found.values()))
    for data in found.values():
        if (data.ids, data.classes) != (first.ids, first.classes):
            raise DatasetError(f"{data.json_file} and {first.json_file} have different categories: the splits of "
                               "one dataset share them (ids and names)")
    cfg.custom_data.update(classes=list(first.classes), category_ids=list(first.ids))
    heads = cfg.model.get("roi_heads")
    if heads is None:  # a detector of boxes with its own classifier (DETA)
        cfg.model.num_classes = len(first.classes)
        cfg.dataloader.evaluator.tasks = ("bbox",)
        return summary
    heads.num_classes = len(first.classes)
    if training and not found["train"].has_masks and heads.get("mask_head") is not None:
        summary.warnings.append(f"{found['train'].json_file} has no segmentations: training boxes only (mask "
                                "head off)")
        heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
        cfg.dataloader.train.mapper.update(use_instance_mask=False, recompute_boxes=False)  # crops clip boxes
    if heads.get("mask_head") is None or not found.get("val", first).has_masks:
        cfg.dataloader.evaluator.tasks = ("bbox",)
    return summary


def small_data_schedule(train, dataloader, output_dir: str, max_iter: int = 5000, batch_size: int = 16):
    """The custom-data templates' schedule, a starting point rather than a measured recipe: ``batch_size``
    images per step, ``max_iter`` iterations with 5% warm-up then cosine decay (so ``train.max_iter=N`` on
    the command line keeps a sound schedule), evaluation and a checkpoint every 1000; the learning rate is
    the COCO recipe's. Sets ``train`` and ``dataloader``; returns the ``lr_multiplier``."""
    from detectron2.config import LazyCall as L
    from detectron2.solver import WarmupParamScheduler
    from fvcore.common.param_scheduler import CosineParamScheduler

    dataloader.train.total_batch_size = batch_size
    train.max_iter = max_iter
    train.eval_period = train.checkpointer.period = 1000
    train.output_dir = output_dir
    return L(WarmupParamScheduler)(scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
                                   warmup_length=0.05, warmup_factor=0.001)


def custom_metadata(cfg) -> None:
    """Give the test dataset of a trained config (its ``config.yaml``) the classes its ``custom_data``
    kept, so that a detector names them (and writes their ids) without the json files."""
    kept = cfg.get("custom_data") or {}
    metadata = MetadataCatalog.get(cfg.dataloader.test.dataset.names)
    if kept.get("classes") and not metadata.get("thing_classes"):
        metadata.set(thing_classes=list(kept["classes"]),
                     thing_dataset_id_to_contiguous_id={i: k for k, i in enumerate(kept["category_ids"])})
