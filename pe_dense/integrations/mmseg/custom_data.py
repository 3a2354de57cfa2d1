"""A declared segmentation or depth dataset (:mod:`pe_dense.data.custom`: folders and a ``dataset.json``) in
mmsegmentation: its dataset classes, and :func:`use_dataset`, which checks it and points any segmentation or
depth config at it (``tools/train_seg.py --data PATH``)."""

from __future__ import annotations

from typing import Optional

from mmengine.config import Config
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ...data.custom import DatasetError, FolderData, Summary, check_folders, read_declaration
from .predict import MODEL_TASKS

LOADERS = {"train_dataloader": "train", "val_dataloader": "val", "test_dataloader": "test"}
class _DeclaredDataset(BaseSegDataset):
    """The image and label files of one split of the dataset declared under ``data_root``."""

    task = ""

    def __init__(self, data_root: str, split: str = "train", **kwargs):
        self.declared = read_declaration(data_root)
        if self.declared.task != self.task:
            raise DatasetError(f"{data_root} is a {self.declared.task} dataset, not a {self.task} one")
        self.split = split
        super().__init__(data_root=data_root, **self.declared_settings(), **kwargs)

    def declared_settings(self) -> dict:
        """The dataset's arguments from the declaration (its metainfo, ...)."""
        return {}

    def label_entry(self, label: str) -> dict:
        """An image's entry for its label file."""
        return {}

    def load_data_list(self) -> list[dict]:
        return [{"img_path": str(image), **self.label_entry(str(label)), "seg_fields": []}
                for image, label in self.declared.pairs(self.split)]


@DATASETS.register_module()
class DeclaredSegDataset(_DeclaredDataset):
    """A declared segmentation dataset: class names and colours, ignore index and reduce-zero-label from
    its ``dataset.json``.

    Args:
        data_root: the folder holding ``dataset.json`` (or the file itself).
        split: a split it declares (``train``, ``val``, ...).
        **kwargs: as :class:`mmseg.datasets.BaseSegDataset` (``pipeline``, ``test_mode``, ...).
    """

    task = "segmentation"

    def declared_settings(self) -> dict:
        meta = {"classes": tuple(self.declared.classes)}
        if self.declared.palette:
            meta["palette"] = self.declared.palette
        return {"metainfo": meta, "reduce_zero_label": self.declared.reduce_zero_label,
                "ignore_index": self.declared.ignore_index}

    def label_entry(self, label: str) -> dict:
        return {"seg_map_path": label, "label_map": self.label_map, "reduce_zero_label": self.reduce_zero_label,
                "ignore_index": self.ignore_index}


@DATASETS.register_module()
class DeclaredDepthDataset(_DeclaredDataset):
    """A declared depth dataset: depth maps as 16-bit PNGs times the declared ``depth_scale`` or ``.npy``
    files in metres; the depth range and focal length travel in the metainfo (and so in checkpoints).

    Args: as :class:`DeclaredSegDataset`.
    """

    task = "depth"

    def declared_settings(self) -> dict:
        return {"metainfo": {"classes": (),  # mmseg asks every dataset for classes; depth has none
                             "min_depth": self.declared.min_depth, "max_depth": self.declared.max_depth,
                             "focal_length": self.declared.focal_length}}

    def label_entry(self, label: str) -> dict:
        return {"depth_map_path": label}


def _set_in_pipeline(pipeline: list, step: str, **values) -> None:
    for transform in pipeline:
        if transform["type"] == step:
            transform.update(values)


def use_dataset(cfg: Config, path: str, loaders: Optional[list[str]] = None) -> Summary:
    """Check the dataset declared at ``path`` (the splits the given dataloaders read: ``train`` for
    training, ``val`` for validation, ``test`` for testing or else ``val``) and point ``cfg`` at it: the
    dataloaders, the heads' classes or depth range, ignore index and the evaluator. Returns the summary."""
    declared = read_declaration(path)
    task = MODEL_TASKS.get(cfg.model.get("type"))
    if task != declared.task:
        raise DatasetError(f"{declared.root} is a {declared.task} dataset but the config's model is "
                           f"{cfg.model.get('type')} ({task or 'unknown'})")
    splits = {**LOADERS, "test_dataloader": "test" if "test" in declared.splits else "val"}
    used = [name for name in (loaders or list(LOADERS)) if cfg.get(name)]
    summary = check_folders(declared, list(dict.fromkeys(splits[name] for name in used)))
    dataset_type = "DeclaredSegDataset" if task == "segmentation" else "DeclaredDepthDataset"
    for name in LOADERS:
        if cfg.get(name):
            loader = cfg[name]
            loader.dataset = dict(type=dataset_type, data_root=str(declared.root), split=splits[name],
                                  pipeline=loader.dataset.pipeline, test_mode=name != "train_dataloader")
    if task == "segmentation":
        _point_segmenter(cfg, declared)
    else:
        _point_depth_estimator(cfg, declared)
    return summary


def _pipelines(cfg: Config) -> list[list]:
    return [cfg[name].dataset.pipeline for name in LOADERS if cfg.get(name)]


def _point_segmenter(cfg: Config, declared: FolderData) -> None:
    num_classes = len(declared.classes)
    for head in ("decode_head", "auxiliary_head"):
        if cfg.model.get(head):
            cfg.model[head].update(num_classes=num_classes, ignore_index=declared.ignore_index)
    cfg.model.data_preprocessor.seg_pad_val = declared.ignore_index  # padding is never a class
    for pipeline in _pipelines(cfg):
        _set_in_pipeline(pipeline, "LoadCheckedAnnotations", num_classes=num_classes)
    for evaluator in ("val_evaluator", "test_evaluator"):
        if cfg.get(evaluator):
            cfg[evaluator].ignore_index = declared.ignore_index


def _point_depth_estimator(cfg: Config, declared: FolderData) -> None:
    cfg.model.decode_head.update(min_depth=declared.min_depth, max_depth=declared.max_depth)
    for pipeline in _pipelines(cfg):
        _set_in_pipeline(pipeline, "LoadCheckedDepth", depth_rescale_factor=declared.depth_scale,
                         max_depth=declared.max_depth)
    for evaluator in ("val_evaluator", "test_evaluator"):
        if cfg.get(evaluator):
            cfg[evaluator].update(min_depth_eval=declared.min_depth, max_depth_eval=declared.max_depth,
                                  crop_type=None)
