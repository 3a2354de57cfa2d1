"""A built-in instance-segmentation dataset of shapes, written as COCO files on disk.

Each image has 2-6 shapes of four classes (circle, square, triangle, star) with random sizes,
rotations and vivid colours, over a smooth muted background. Later shapes are drawn in front, so
earlier ones can be partly hidden: their annotation is the visible part. Unoccluded shapes are
annotated with their polygon, occluded ones with an RLE mask, as in COCO itself. Files follow the
COCO layout (``<root>/<split>/*.png`` and ``<root>/annotations/instances_<split>.json``), so
pycocotools, detectron2's COCOEvaluator and any COCO tool read them as they read COCO.

Generation is deterministic: image ``i`` of a split depends only on the split's seed and ``i``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from ..atomic_files import atomic_output, write_json
from .drawing import fill_polygon, muted, saturated, shape_outline, smooth_texture
from .generated import SplitSpec

CLASSES = ("circle", "square", "triangle", "star")
FORMAT_VERSION = 1


SPLITS = {"train": SplitSpec(2000, 0), "val": SplitSpec(200, 1)}
IMAGE_SIZE = 256
MIN_VISIBLE = 0.35  # shapes hidden more than this are left out (too little to recognise)
MIN_AREA = 64  # pixels


def encode_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a binary (H, W) mask: run lengths in column-major order, zeros first."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    counts = runs.tolist() if flat.size and not flat[0] else [0] + runs.tolist()
    return {"size": list(mask.shape), "counts": counts}


def render_shapes_image(index: int, seed: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[dict]]:
    """Image ``index`` of the split with ``seed``: (H, W, 3) uint8 and its instances, each a dict
    with ``category`` (index into CLASSES), ``mask`` (visible pixels) and ``polygon`` (flat
    [x0, y0, x1, y1, ...], or None when the shape is partly hidden)."""
    rng = np.random.default_rng([seed, index])
    canvas = muted(smooth_texture(rng, size, size, 8))
    drawn = []  # (category, polygon, full mask, visible mask), back to front
    for _ in range(rng.integers(2, 7)):
        category = int(rng.integers(len(CLASSES)))
        radius = rng.uniform(0.07, 0.2) * size
        cx, cy = rng.uniform(0.6 * radius, size - 0.6 * radius, 2)  # may be cut by the border
        polygon = shape_outline(CLASSES[category], cx, cy, radius, rng.uniform(0, 2 * math.pi))
        full = fill_polygon(polygon, size)
        paint = 0.8 * saturated(rng.random()) + 0.2 * smooth_texture(rng, size, size, 4)
        canvas[full] = paint[full]
        for *_, visible in drawn:  # the new shape hides what it covers
            visible &= ~full
        drawn.append((category, polygon, full, full.copy()))
    instances = []
    for category, polygon, full, visible in drawn:
        area, total = int(visible.sum()), int(full.sum())
        if area < MIN_AREA or area < MIN_VISIBLE * total:
            continue
        flat = [v for point in polygon for v in point]
        inside = all(0 <= v <= size for v in flat)
        instances.append({"category": category, "mask": visible,
                          "polygon": flat if area == total and inside else None})
    return (canvas * 255).round().astype(np.uint8), instances


def _bbox(mask: np.ndarray) -> list[float]:
    """[x, y, width, height] of the mask's pixels (pixel i covers [i, i + 1))."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def write_shapes_split(root: Union[str, os.PathLike], split: str, num_images: Optional[int] = None,
                       seed: Optional[int] = None, size: int = IMAGE_SIZE) -> Path:
    """Write a split under ``root`` in the COCO layout and return its annotation file.

    Defaults come from :data:`SPLITS`. The annotation file is written last (atomically), so a split
    with an annotation file is complete.
    """
    if split not in SPLITS and (num_images is None or seed is None):
        raise ValueError(f"unknown split '{split}' (known: {', '.join(SPLITS)}); give num_images and seed")
    default = SPLITS.get(split, SplitSpec(0, 0))
    num_images = default.num_images if num_images is None else num_images
    seed = default.seed if seed is None else seed
    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    root = Path(root)
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        pixels, instances = render_shapes_image(index, seed, size)
        name = f"{index:06d}.png"
        with atomic_output(image_dir / name) as tmp:
            Image.fromarray(pixels).save(tmp)
        images.append({"id": index + 1, "file_name": name, "height": size, "width": size})
        for instance in instances:
            mask = instance["mask"]
            segmentation = [instance["polygon"]] if instance["polygon"] else encode_rle(mask)
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1, "category_id": instance["category"] + 1,
                "segmentation": segmentation, "area": float(mask.sum()), "bbox": _bbox(mask), "iscrowd": 0,
            })
    coco = {
        "info": {"description": "pe_dense built-in shapes", "version": FORMAT_VERSION,
                 "generator": {"split": split, "num_images": num_images, "seed": seed, "size": size}},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)],
    }
    path = annotation_file(root, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, coco, indent=None)
    return path


def annotation_file(root: Union[str, os.PathLike], split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def ensure_shapes_split(root: Union[str, os.PathLike], split: str, **kwargs) -> Path:
    """The split's annotation file, generating the split first when it is absent or was made with
    other settings (``kwargs`` as :func:`write_shapes_split`)."""
    path = annotation_file(root, split)
    default = SPLITS.get(split)
    wanted = {"split": split, "num_images": kwargs.get("num_images", default and default.num_images),
              "seed": kwargs.get("seed", default and default.seed), "size": kwargs.get("size", IMAGE_SIZE)}
    if path.exists():
        info = json.loads(path.read_text()).get("info", {})
        if info.get("version") == FORMAT_VERSION and info.get("generator") == wanted:
            return path
    return write_shapes_split(root, split, **kwargs)
