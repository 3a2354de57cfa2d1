"""Data for mmsegmentation: the built-in scenes as a dataset class, and loading transforms that name
the file when an image or a label map is unreadable or does not fit its dataset."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets import BaseSegDataset
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS

from ...data import scenes

DEFAULT_SCENES_ROOT = os.path.join(os.environ.get("PE_DENSE_DATASETS", "datasets"), "pe_scenes")


class SegmentationDataError(ValueError):
    """An image or label map that cannot be used, named in the message."""


@DATASETS.register_module()
class PEScenesDataset(BaseSegDataset):
    """pe_dense's built-in scenes (:mod:`pe_dense.data.scenes`), in the ADE20k layout under ``data_root``,
    generated there on first use (``$PE_DENSE_DATASETS/pe_scenes`` by default).

    Args:
        split: ``"training"`` or ``"validation"``.
        **kwargs: as :class:`mmseg.datasets.BaseSegDataset` (``pipeline``, ``test_mode``, ...).
    """

    METAINFO = dict(classes=scenes.CLASSES, palette=[list(c) for c in scenes.PALETTE])

    def __init__(self, split: str = "training", data_root: Optional[str] = None, **kwargs):
        data_root = data_root or DEFAULT_SCENES_ROOT
        if not kwargs.get("lazy_init"):
            scenes.ensure_scenes(data_root, splits=(split,))
        super().__init__(data_root=data_root, img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True,
                         data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"), **kwargs)


@TRANSFORMS.register_module()
class LoadCheckedImage(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile``, with an error naming the file when it cannot be decoded."""

    def transform(self, results: dict) -> Optional[dict]:
        try:
            return super().transform(results)
        except Exception as e:  # mmcv fails with an assertion or a decoder error
            raise SegmentationDataError(f"cannot read image {results['img_path']}: {e}") from None


@TRANSFORMS.register_module()
class LoadCheckedAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations``, refusing a label map that cannot be read, whose size is not its
    image's (``ori_shape``), or that holds class ids outside ``0..num_classes-1`` other than the
    ignore index (after the dataset's ``reduce_zero_label``), with an error naming the file.

    Args:
        num_classes: the number of classes the model predicts.
        **kwargs: as :class:`mmseg.datasets.transforms.LoadAnnotations`.
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def transform(self, results: dict) -> dict:
        path = results["seg_map_path"]
        try:
            results = super().transform(results)
        except Exception as e:  # an undecodable PNG reaches mmseg as None
            raise SegmentationDataError(f"cannot read label map {path}: {e}") from None
        labels = results["gt_seg_map"]
        image_shape = tuple(results.get("ori_shape", labels.shape))
        if labels.shape != image_shape:
            raise SegmentationDataError(f"label map {path} is {labels.shape[1]}x{labels.shape[0]} pixels but its "
                                        f"image {results.get('img_path')} is {image_shape[1]}x{image_shape[0]}")
        ignore = results.get("ignore_index", 255)
        bad = np.setdiff1d(np.unique(labels), [*range(self.num_classes), ignore])
        if bad.size:
            raw = bad + 1 if results.get("reduce_zero_label") else bad  # the values as stored in the file
            raise SegmentationDataError(
                f"label map {path} has class ids {raw[:8].tolist()} beyond the {self.num_classes} classes "
                f"(ignore index {ignore})" + (" after reduce_zero_label" if results.get("reduce_zero_label") else ""))
        return results

