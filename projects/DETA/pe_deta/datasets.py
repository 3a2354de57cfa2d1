"""Objects365 v2 in detectron2's DatasetCatalog, for the released recipe's pre-training stages.

Registered by path, under ``$DETECTRON2_DATASETS/objects365`` (default ``datasets``) in the layout
of the official release: ``train/`` and ``val/`` image folders and
``annotations/zhiyuan_objv2_{train,val}.json`` (COCO format). Nothing is read until a loader asks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

OBJECTS365_SPLITS = {"train": "zhiyuan_objv2_train.json", "val": "zhiyuan_objv2_val.json"}


def register_objects365(root: Optional[os.PathLike] = None) -> list[str]:
    """Register ``objects365_v2_train`` and ``objects365_v2_val`` (a no-op for names already registered)."""
    root = Path(root) if root is not None else Path(os.environ.get("DETECTRON2_DATASETS", "datasets")) / "objects365"
    names = []
    for split, annotation_file in OBJECTS365_SPLITS.items():
        name = f"objects365_v2_{split}"
        names.append(name)
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(root / "annotations" / annotation_file), str(root / split))
    return names
