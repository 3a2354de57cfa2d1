"""Data for mmsegmentation: the built-in scenes and depth scenes as dataset classes, and loading
transforms that name the file when an image, a label map or a depth map is unreadable or does not fit
its dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import mmengine.fileio
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets import BaseSegDataset, NYUDataset
from mmseg.datasets.transforms import LoadAnnotations, LoadDepthAnnotation
from mmseg.registry import DATASETS, TRANSFORMS
from mmseg.utils import datafrombytes

from ...data import depth_scenes, scenes
from ...data.custom import DatasetError, read_depth
from ...data.generated import datasets_root


class SegmentationDataError(ValueError):
    """An image, label map or depth map that cannot be used, named in the message."""


@DATASETS.register_module()
class PEScenesDataset(BaseSegDataset):
    """pe_dense's built-in scenes (:mod:`pe_dense.data.scenes`), in the ADE20k layout under ``data_root``,
    generated there on first use (``$PE_DENSE_DATASETS/pe_scenes`` by default).

    Args:
        split: ``"training"`` or ``"validation"``.
        num_images: the split's first images only (default: all of the split's default size).
        **kwargs: as :class:`mmseg.datasets.BaseSegDataset` (``pipeline``, ``test_mode``, ...).
    """

    METAINFO = dict(classes=scenes.CLASSES, palette=[list(c) for c in scenes.PALETTE])

    def __init__(self, split: str = "training", data_root: Optional[str] = None, num_images: Optional[int] = None,
                 **kwargs):
        data_root = data_root or str(datasets_root() / "pe_scenes")
        if not kwargs.get("lazy_init"):
            scenes.ensure_scenes(data_root, splits=(split,), num_images=num_images)
        super().__init__(data_root=data_root, img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True,
                         data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"),
                         indices=num_images, **kwargs)


@DATASETS.register_module()
class PEDepthScenesDataset(NYUDataset):
    """pe_dense's built-in depth scenes (:mod:`pe_dense.data.depth_scenes`), in the NYU-Depth-v2 layout
    under ``data_root``, generated there on first use (``$PE_DENSE_DATASETS/pe_depth_scenes`` by default).

    Args:
        split: ``"train"`` or ``"test"``.
        num_images: the split's first images only (default: all of the split's default size).
        **kwargs: as :class:`mmseg.datasets.NYUDataset` (``pipeline``, ``test_mode``, ...).
    """

    def __init__(self, split: str = "train", data_root: Optional[str] = None, num_images: Optional[int] = None,
                 **kwargs):
        data_root = data_root or str(datasets_root() / "pe_depth_scenes")
        if not kwargs.get("lazy_init"):
            depth_scenes.ensure_depth_scenes(data_root, splits=(split,), num_images=num_images)
        super().__init__(data_root=data_root,
                         data_prefix=dict(img_path=f"images/{split}", depth_map_path=f"annotations/{split}"),
                         indices=num_images, **kwargs)


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



@TRANSFORMS.register_module()
class LoadCheckedDepth(LoadDepthAnnotation):
    """mmseg's ``LoadDepthAnnotation`` (a 16-bit PNG times ``depth_rescale_factor``, or a ``.npy`` in
    metres; 0 = no depth), refusing, with an error naming the file, a depth map that cannot be read,
    that is not a single-channel 16-bit image or float array, whose size is not its image's
    (``ori_shape``), or that has no valid depth (none above 0, and below ``max_depth`` when given).

    Args:
        max_depth: the largest depth in metres that counts as valid (the evaluation range).
        **kwargs: as :class:`mmseg.datasets.transforms.LoadDepthAnnotation`.
    """

    def __init__(self, max_depth: Optional[float] = None, **kwargs):
        super().__init__(**kwargs)
        self.max_depth = max_depth

    def transform(self, results: dict) -> dict:
        path = results["depth_map_path"]
        is_npy = path.lower().endswith(".npy")  # as declared datasets may store depth: already metres
        scale = 1.0 if is_npy else self.depth_rescale_factor
        if is_npy:
            try:
                depth = read_depth(Path(path), scale)
            except DatasetError as e:
                raise SegmentationDataError(str(e)) from None
        else:
            depth = self._read_png(path) * scale
        image_shape = tuple(results.get("ori_shape", depth.shape))
        if depth.shape != image_shape:
            raise SegmentationDataError(f"depth map {path} is {depth.shape[1]}x{depth.shape[0]} pixels but its "
                                        f"image {results.get('img_path')} is {image_shape[1]}x{image_shape[0]}")
        if not ((depth > 0) & (depth < (self.max_depth or np.inf))).any():
            within = f" below {self.max_depth} m" if self.max_depth else ""
            raise SegmentationDataError(f"depth map {path} has no valid depth (no pixel above 0{within})")
        results["gt_depth_map"] = depth
        results["seg_fields"].append("gt_depth_map")
        results["depth_rescale_factor"] = scale
        return results

    def _read_png(self, path: str) -> np.ndarray:
        try:
            raw = datafrombytes(mmengine.fileio.get(path, self.backend_args), backend=self.decode_backend)
        except Exception as e:  # a missing file, or bytes no decoder takes
            raise SegmentationDataError(f"cannot read depth map {path}: {e}") from None
        if raw is None:
            raise SegmentationDataError(f"cannot read depth map {path}: not an image")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            channels = 1 if raw.ndim == 2 else raw.shape[2]
            raise SegmentationDataError(
                f"depth map {path} is a {raw.dtype.itemsize * 8}-bit image with {channels} channel(s); depth maps "
                "are single-channel 16-bit PNGs (NYU: millimetres, 0 = no depth) or .npy files in metres")
        return raw.astype(np.float32)
