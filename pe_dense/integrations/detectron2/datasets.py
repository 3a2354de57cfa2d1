"""The built-in shapes dataset in detectron2's DatasetCatalog, as ``shapes_train`` and ``shapes_val``.

The files live under ``$PE_DENSE_DATASETS/shapes`` (the built-in datasets' root, default ``datasets``)
and are generated the first time a split is asked for, so any config can name the dataset on a
fresh machine. They are read with detectron2's own COCO loader and evaluated with COCOEvaluator,
exactly as COCO is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ...data import shapes
from ...data.generated import datasets_root


def register_shapes(root: Optional[Union[str, os.PathLike]] = None, prefix: str = "shapes",
                    splits: Mapping[str, shapes.SplitSpec] = shapes.SPLITS) -> list[str]:
    """Register each split (default: :data:`pe_dense.data.shapes.SPLITS`) as ``<prefix>_<split>``;
    returns the names. Registering an already registered name is a no-op.
    """
    root = Path(root) if root is not None else datasets_root() / "shapes"
    names = []
    for split, spec in splits.items():
        name = f"{prefix}_{split}"
        names.append(name)
        if name in DatasetCatalog.list():
            continue
        json_file, image_root = shapes.annotation_file(root, split), root / split

        def load(split=split, spec=spec, json_file=json_file, image_root=image_root, name=name):
            shapes.ensure_shapes_split(root, split, num_images=spec.num_images, seed=spec.seed)
            return load_coco_json(str(json_file), str(image_root), name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=str(json_file), image_root=str(image_root), evaluator_type="coco",
            thing_classes=list(shapes.CLASSES), thing_colors=_THING_COLORS,
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(shapes.CLASSES))},  # as the files say
        )
    return names


# Visualizer colours per class, distinct from each other and from the muted backgrounds.
_THING_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48)]


def shapes_batch(count: int, size: int, seed: int = 0) -> list[dict]:
    """``count`` shapes images (``size`` square) with their instances, in the input format of detectron2's
    models in training (as its dataset mapper gives them, without augmentation)."""
    import torch
    from detectron2.structures import BitMasks, Boxes, Instances

    batch = []
    for index in range(count):
        image, instances = shapes.render_shapes_image(index, seed=seed, size=size)
        target = Instances((size, size))
        target.gt_masks = BitMasks(torch.stack([torch.from_numpy(i["mask"]) for i in instances]))
        target.gt_boxes = Boxes(target.gt_masks.get_bounding_boxes().tensor)
        target.gt_classes = torch.tensor([i["category"] for i in instances])
        batch.append({"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "instances": target})
    return batch
