"""Datasets in their owners' formats, checked before any work starts (docs/custom_data.md):

- detection: COCO-format json files (CVAT, Label Studio, Roboflow export them) with their image folders;
- segmentation: folders of images and single-channel masks (grey or indexed PNG) of class ids, declared by a
  ``dataset.json`` naming the classes (optional colours), the ignore index and reduce-zero-label;
- depth: folders of images and depth maps (16-bit PNG times a declared scale, or ``.npy`` in metres), declared
  by a ``dataset.json`` with the scale, the valid depth range and optionally the camera's focal length.

Each check reads everything once and returns a :class:`Summary` (images per split, instances or pixels per
class, image sizes, warnings); a problem that would stop or corrupt training raises :class:`DatasetError`
naming the file or the json entry.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO, Union

import numpy as np
from PIL import Image

from .image_sources import IMAGE_SUFFIXES

PathLike = Union[str, Path]
DECLARATION = "dataset.json"
ASPECT_LIMIT = 5.0  # images more elongated than this are warned about: resizing and crops treat them badly
BOX_SLACK = 1.0  # pixels a box may pass the image border by (exporters round coordinates)
LABEL_FOLDERS = {"segmentation": "masks", "depth": "depth"}
LABEL_SUFFIXES = {"segmentation": (".png",), "depth": (".png", ".npy")}


class DatasetError(ValueError):
    """A dataset that cannot be trained on, with the file or entry at fault in the message."""


@dataclass
class Summary:
    """What a check found: ``splits`` (images per split), ``counts`` (per class: instances or labelled pixels;
    for depth, the depth range), image ``sizes`` (width, height) and ``warnings``."""

    title: str
    unit: str
    splits: dict[str, int] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"{self.title}: " + ", ".join(f"{split} {n} images" for split, n in self.splits.items())]
        if self.sizes:
            common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(3))
            lines.append(f"  image sizes: {len(self.sizes)} distinct, most common {common}")
        if self.counts:
            shown = list(self.counts.items())
            listed = ", ".join(f"{name} {count:g}" for name, count in shown[:20])
            more = f", ... ({len(shown) - 20} more)" if len(shown) > 20 else ""
            lines.append(f"  {self.unit}{', all splits' if len(self.splits) > 1 else ''}: {listed}{more}")
        return lines

    def print(self, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> None:
        """The summary to ``out`` (stdout), each warning as a ``warning:`` line to ``err`` (stderr)."""
        print("\n".join(self.lines()), file=out or sys.stdout, flush=True)
        for warning in self.warnings:
            print(f"warning: {warning}", file=err or sys.stderr, flush=True)

    def merge(self, other: Summary) -> None:
        self.splits.update(other.splits)
        for name, count in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + count
        self.sizes.update(other.sizes)
        self.warnings += other.warnings


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{what} {path} is not readable json: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{what} {path} is not a json object")
    return data


def _aspect_warning(sizes: Counter, where: str) -> list[str]:
    elongated = sum(n for (w, h), n in sizes.items() if max(w / h, h / w) > ASPECT_LIMIT)
    return [f"{where}: {elongated} image(s) more elongated than {ASPECT_LIMIT:g}:1"] if elongated else []


# Detection: COCO json

@dataclass
class CocoData:
    """A checked COCO-format split: its categories (``ids`` and ``classes`` in id order), whether any
    annotation has a segmentation (``has_masks``), and the summary."""

    json_file: Path
    image_root: Path
    ids: list[int]
    classes: list[str]
    has_masks: bool
    summary: Summary


def _check_box(bbox, width: float, height: float, where: str) -> None:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise DatasetError(f"{where}: bbox {bbox} is not [x, y, width, height]")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where}: bbox {bbox} has zero area")
    if x < -BOX_SLACK or y < -BOX_SLACK or x + w > width + BOX_SLACK or y + h > height + BOX_SLACK:
        raise DatasetError(f"{where}: bbox {bbox} lies outside its {width}x{height} image")


def _has_mask(segmentation, where: str) -> bool:
    if isinstance(segmentation, dict):  # RLE
        return True
    if not segmentation:
        return False
    if not isinstance(segmentation, list):
        raise DatasetError(f"{where}: segmentation is neither polygons nor RLE")
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            points = len(polygon) // 2 if isinstance(polygon, list) else 0
            raise DatasetError(f"{where}: a polygon has {points} point(s); polygons need at least 3 (x, y) pairs")
    return True


def check_coco(json_file: PathLike, image_root: PathLike, split: str = "train") -> CocoData:
    """Check a COCO-format json and its image folder (every image on disk, every annotation's image and
    category known, boxes inside their image with an area, polygons of 3 points or more, no file named
    twice, at least one image)."""
    json_file, image_root = Path(json_file), Path(image_root)
    data = _read_json(json_file, "annotation file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_file} has no '{key}' list: it is not a COCO-format json")
    if not data["images"]:
        raise DatasetError(f"{json_file}: split '{split}' has no images")
    if not image_root.is_dir():
        raise DatasetError(f"image folder {image_root} (of {json_file}) does not exist")
    categories = {}
    for category in data["categories"]:
        if not isinstance(category.get("id"), int) or "name" not in category:
            raise DatasetError(f"{json_file}: category {category} needs an integer 'id' and a 'name'")
        categories[category["id"]] = str(category["name"])
    if not categories:
        raise DatasetError(f"{json_file} declares no categories")
    images, names = {}, {}
    summary = Summary(f"detection dataset {json_file.name}", "instances per class", splits={split: 0})
    for image in data["images"]:
        where = f"{json_file}: image {image.get('id')} ({image.get('file_name')})"
        if not all(key in image for key in ("id", "file_name", "width", "height")):
            raise DatasetError(f"{where} needs 'id', 'file_name', 'width' and 'height'")
        if image["file_name"] in names:
            raise DatasetError(f"{json_file}: duplicate file name {image['file_name']} (images "
                               f"{names[image['file_name']]} and {image['id']})")
        if image["id"] in images:
            raise DatasetError(f"{json_file}: duplicate image id {image['id']}")
        path = image_root / image["file_name"]
        if not path.is_file():
            raise DatasetError(f"{where}: {path} does not exist")
        width, height = _image_size(path, upright=True)
        if (width, height) != (image["width"], image["height"]):
            raise DatasetError(f"{where}: the json says {image['width']}x{image['height']} but {path} is "
                               f"{width}x{height} (as its EXIF orientation turns it)")
        names[image["file_name"]] = image["id"]
        images[image["id"]] = image
        summary.sizes[(image["width"], image["height"])] += 1
    summary.splits[split] = len(images)
    counts = Counter()
    crowd, plain = Counter(), Counter()
    has_masks = False
    for index, annotation in enumerate(data["annotations"]):
        where = f"{json_file}: annotation {annotation.get('id', f'#{index}')}"
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise DatasetError(f"{where} points at unknown image id {annotation.get('image_id')}")
        if annotation.get("category_id") not in categories:
            raise DatasetError(f"{where} points at unknown category id {annotation.get('category_id')}")
        _check_box(annotation.get("bbox"), image["width"], image["height"], where)
        has_masks |= _has_mask(annotation.get("segmentation"), where)
        counts[annotation["category_id"]] += 1
        (crowd if annotation.get("iscrowd") else plain)[image["id"]] += 1
    ids = sorted(categories)
    summary.counts = {categories[i]: counts[i] for i in ids}
    crowd_only = [images[i]["file_name"] for i in crowd if not plain[i]]
    if crowd_only:
        summary.warnings.append(f"{json_file}: {len(crowd_only)} image(s) have only crowd annotations (no training "
                                f"targets), e.g. {crowd_only[0]}")
    empty = [categories[i] for i in ids if not counts[i]]
    if empty:
        summary.warnings.append(f"{json_file}: {len(empty)} class(es) have no instances: {', '.join(empty[:10])}")
    summary.warnings += _aspect_warning(summary.sizes, str(json_file))
    return CocoData(json_file, image_root, ids, [categories[i] for i in ids], has_masks, summary)


# Segmentation and depth: image folders with a dataset.json

@dataclass
class FolderData:
    """A declared segmentation or depth dataset: its root, task, splits (``{split: {"images": folder,
    "labels": folder}}`` relative to the root), and the task's settings (segmentation: ``classes``,
    ``palette``, ``ignore_index``, ``reduce_zero_label``; depth: ``depth_scale``, ``min_depth``, ``max_depth``,
    ``focal_length``)."""

    root: Path
    task: str
    splits: dict[str, dict[str, str]]
    classes: list[str] = field(default_factory=list)
    palette: Optional[list[list[int]]] = None
    ignore_index: int = 255
    reduce_zero_label: bool = False
    depth_scale: float = 1e-3  # millimetres, as NYU and most RGB-D cameras store depth
    min_depth: float = 1e-3
    max_depth: Optional[float] = None  # declared: no default fits every camera
    focal_length: Optional[float] = None

    def pairs(self, split: str) -> list[tuple[Path, Path]]:
        """The split's (image, label file) pairs, matched by file name without suffix."""
        return _pairs(self.root, self.splits[split], LABEL_SUFFIXES[self.task])


def _number(declaration: dict, key: str, default, path: Path, kind=float):
    value = declaration.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or
                              (kind is int and value != int(value))):
        raise DatasetError(f"{path}: '{key}' must be a{'n integer' if kind is int else ' number'}, got {value!r}")
    return None if value is None else kind(value)


def read_declaration(path: PathLike) -> FolderData:
    """The dataset declared by ``path`` (a ``dataset.json``, or the folder holding one), checked for sense;
    its files are checked by :func:`check_folders`."""
    path = Path(path)
    file = path / DECLARATION if path.is_dir() else path
    if file.name != DECLARATION:  # the training datasets read the declaration by its folder
        raise DatasetError(f"{file}: a dataset is declared by a file named {DECLARATION}; give its folder")
    declaration = _read_json(file, "dataset declaration")
    task = declaration.get("task")
    if task not in LABEL_FOLDERS:
        raise DatasetError(f"{file}: 'task' must be 'segmentation' or 'depth', got {task!r}")
    default_splits = {split: {"images": f"images/{split}", "labels": f"{LABEL_FOLDERS[task]}/{split}"}
                      for split in ("train", "val")}
    splits = declaration.get("splits", default_splits)
    if not isinstance(splits, dict) or not splits or not all(
            isinstance(s, dict) and set(s) == {"images", "labels"} for s in splits.values()):
        raise DatasetError(f"{file}: 'splits' maps each split to {{\"images\": FOLDER, \"labels\": FOLDER}}")
    data = FolderData(file.parent, task, splits)
    if task == "segmentation":
        classes = declaration.get("classes")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise DatasetError(f"{file}: 'classes' must be a list of class names")
        if len(set(classes)) != len(classes):
            raise DatasetError(f"{file}: class names repeat: {[c for c, n in Counter(classes).items() if n > 1]}")
        palette = declaration.get("palette")
        if palette is not None and not (isinstance(palette, list) and len(palette) == len(classes) and all(
                isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                for c in palette)):
            raise DatasetError(f"{file}: 'palette' must hold one [r, g, b] (0-255) per class")
        data.classes, data.palette = classes, palette
        data.ignore_index = _number(declaration, "ignore_index", data.ignore_index, file, int)
        data.reduce_zero_label = declaration.get("reduce_zero_label", data.reduce_zero_label)
        if not isinstance(data.reduce_zero_label, bool):
            raise DatasetError(f"{file}: 'reduce_zero_label' must be true or false")
        if not 0 <= data.ignore_index <= 255 or len(classes) > 255:
            raise DatasetError(f"{file}: masks are 8-bit: at most 255 classes and an ignore index in 0-255")
        if data.reduce_zero_label and data.ignore_index != 255:
            raise DatasetError(f"{file}: with reduce_zero_label, value 0 becomes the ignore index 255 "
                               "(mmsegmentation's convention): set ignore_index to 255")
        if data.ignore_index < len(classes) + data.reduce_zero_label:
            raise DatasetError(f"{file}: ignore_index {data.ignore_index} is a class id")
    else:
        for key in ("depth_scale", "min_depth", "max_depth", "focal_length"):
            setattr(data, key, _number(declaration, key, getattr(data, key), file))
        if data.max_depth is None:
            raise DatasetError(f"{file}: depth datasets declare 'max_depth' (metres), the largest valid depth")
        if not 0 <= data.min_depth < data.max_depth or data.depth_scale <= 0 or (data.focal_length or 1) <= 0:
            raise DatasetError(f"{file}: need depth_scale > 0, 0 <= min_depth < max_depth, focal_length > 0")
    return data


def _pairs(root: Path, folders: dict[str, str], label_suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    image_dir, label_dir = root / folders["images"], root / folders["labels"]
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise DatasetError(f"folder {folder} does not exist")

    def by_stem(folder: Path, suffixes) -> dict[str, Path]:
        found = {}
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in suffixes and path.is_file():
                if path.stem in found:
                    raise DatasetError(f"duplicate file name {path.stem} in {folder}: {found[path.stem].name} and "
                                       f"{path.name}")
                found[path.stem] = path
        return found

    images, labels = by_stem(image_dir, IMAGE_SUFFIXES), by_stem(label_dir, label_suffixes)
    if not images:
        raise DatasetError(f"split folder {image_dir} has no images ({', '.join(IMAGE_SUFFIXES)})")
    for stem, image in images.items():
        if stem not in labels:
            raise DatasetError(f"image {image} has no label file {label_dir / stem}{label_suffixes[0]}")
    for stem, label in labels.items():
        if stem not in images:
            raise DatasetError(f"label file {label} has no image in {image_dir}")
    return [(images[stem], labels[stem]) for stem in images]


def read_depth(path: Path, scale: float) -> np.ndarray:
    """A depth map in metres (0 = no depth): a 16-bit PNG times ``scale``, or a float ``.npy`` as it is."""
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read depth map {path}: {e}") from None
        if depth.ndim != 2 or depth.dtype.kind != "f":
            raise DatasetError(f"depth map {path} holds {depth.dtype} {depth.shape}: .npy depth is (H, W) floats in "
                               "metres")
        return np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    raw = _read_image_array(path, "depth map")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(f"depth map {path} is {raw.dtype} with shape {raw.shape}: PNG depth maps are single-channel "
                           "16-bit")
    return raw.astype(np.float32) * scale


def _read_image_array(path: Path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
            if image.mode.startswith("I") and array.size and 0 <= array.min() and array.max() <= 65535:
                array = array.astype(np.uint16)  # Pillow opens 16-bit PNGs as "I;16" or as 32-bit "I"
            return array
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {what} {path}: {e}") from None


def _image_size(path: Path, upright: bool = False) -> tuple[int, int]:
    """(width, height) from the file's header; ``upright``: as its EXIF orientation turns it (as detectron2
    reads images)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = upright and image.getexif().get(0x0112) in (5, 6, 7, 8)  # a quarter turn
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from None
    return (height, width) if turned else (width, height)


def _check_size(label: Path, labels: np.ndarray, image: Path, size: tuple[int, int]) -> None:
    if labels.shape[:2] != (size[1], size[0]):
        raise DatasetError(f"{label} is {labels.shape[1]}x{labels.shape[0]} pixels but its image {image} is "
                           f"{size[0]}x{size[1]}")


def check_folders(data: FolderData, splits: Optional[list[str]] = None) -> Summary:
    """Check the declared splits' files (every image with one label file of its size; masks of class ids
    within the classes or the ignore index; depth maps with valid depth) and summarise them."""
    title = f"{data.task} dataset {data.root}"
    summary = Summary(title, "labelled pixels per class" if data.task == "segmentation" else "depth (metres)")
    pixels = np.zeros(256, dtype=np.int64)
    depths = []
    for split in splits or list(data.splits):
        if split not in data.splits:
            raise DatasetError(f"{data.root / DECLARATION} declares no split '{split}' (it has "
                               f"{', '.join(data.splits)})")
        pairs = data.pairs(split)
        summary.splits[split] = len(pairs)
        for image, label in pairs:
            size = _image_size(image, upright=True)  # as mmcv decodes it
            summary.sizes[size] += 1
            if data.task == "segmentation":
                pixels += _check_mask(data, label, image, size)
            else:
                depth = read_depth(label, data.depth_scale)
                _check_size(label, depth, image, size)
                valid = depth[(depth > data.min_depth) & (depth < data.max_depth)]
                if not valid.size:
                    raise DatasetError(f"depth map {label} has no valid depth (none in ({data.min_depth:g}, "
                                       f"{data.max_depth:g}) m after depth_scale {data.depth_scale:g})")
                depths.append(np.percentile(valid, [0, 50, 100]))
    if data.task == "segmentation":
        offset = int(data.reduce_zero_label)
        summary.counts = {name: int(pixels[i + offset]) for i, name in enumerate(data.classes)}
        empty = [name for name, count in summary.counts.items() if not count]
        if empty:
            summary.warnings.append(f"{data.root}: {len(empty)} class(es) have no pixels: {', '.join(empty[:10])}")
    else:
        ranges = np.array(depths)
        low, median, high = ranges[:, 0].min(), np.median(ranges[:, 1]), ranges[:, 2].max()
        summary.counts = {"min": round(float(low), 3), "median": round(float(median), 3), "max": round(float(high), 3)}
    summary.warnings += _aspect_warning(summary.sizes, str(data.root))
    return summary


def _check_mask(data: FolderData, label: Path, image: Path, size: tuple[int, int]) -> np.ndarray:
    """The mask's pixel count per stored value, once it is a single-channel map of known values."""
    with Image.open(label) as opened:
        mode = opened.mode
    if mode not in ("L", "P", "1"):
        raise DatasetError(f"mask {label} is a {mode} image: masks are single-channel (grey or indexed PNG) class ids")
    labels = _read_image_array(label, "mask")
    _check_size(label, labels, image, size)
    counts = np.bincount(labels.ravel(), minlength=256)
    stored = len(data.classes) + int(data.reduce_zero_label)  # values 0..stored-1 name classes (or 0 the ignored)
    known = np.zeros(256, dtype=bool)
    known[:stored] = True
    known[data.ignore_index] = True
    bad = np.flatnonzero(counts.astype(bool) & ~known)
    if bad.size:
        raise DatasetError(f"mask {label} has values {bad[:8].tolist()} beyond the {len(data.classes)} classes "
                           f"(values 0-{stored - 1}{', 0 ignored' if data.reduce_zero_label else ''}, ignore index "
                           f"{data.ignore_index})")
    return counts
