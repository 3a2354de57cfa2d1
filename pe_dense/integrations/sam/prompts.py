"""First-frame masks from box or point prompts, with Segment Anything (segment-anything package)."""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from ...models.checkpoint import CheckpointError
from .models import SAM_ARCHS, build_segmenter

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
Point = tuple[float, float]  # x, y in pixels


def load_sam(checkpoint: Union[str, os.PathLike], model_type: str = "vit_b", device: str = "cpu"):
    """A segment-anything ``SamPredictor``; the checkpoint is read without unpickling code."""
    try:
        from segment_anything import SamPredictor
    except ImportError:
        raise ImportError("prompts need Segment Anything: pip install 'pe_dense[sam]'") from None
    if model_type not in SAM_ARCHS:
        raise ValueError(f"unknown SAM model '{model_type}'; choose from {', '.join(SAM_ARCHS)}")
    try:
        segmenter = build_segmenter("segment_anything", model_type, checkpoint, device=device)
    except CheckpointError as e:
        raise ValueError(f"'{checkpoint}' is not a SAM {model_type} checkpoint: {e}") from None
    return SamPredictor(segmenter.sam)


def mask_from_prompts(predictor, image: Image.Image, boxes: Sequence[Box] = (),
                      points: Sequence[Point] = ()) -> np.ndarray:
    """(H, W) uint8 labels: one object per box, then one per point (a single positive click).

    Later prompts are painted over earlier ones where their masks overlap.
    """
    if not boxes and not points:
        raise ValueError("give at least one box or point prompt")
    width, height = image.size
    for x0, y0, x1, y1 in boxes:
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"box {x0},{y0},{x1},{y1} is empty or outside the {width}x{height} frame")
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"point {x},{y} is outside the {width}x{height} frame")
    predictor.set_image(np.asarray(image.convert("RGB")))
    prompts = [{"box": np.array(b, dtype=np.float32)} for b in boxes]
    prompts += [{"point_coords": np.array([p], dtype=np.float32), "point_labels": np.array([1])} for p in points]
    labels = np.zeros((height, width), dtype=np.uint8)
    with torch.inference_mode():
        for obj_id, prompt in enumerate(prompts, start=1):
            masks, _, _ = predictor.predict(multimask_output=False, **prompt)
            if not masks[0].any():
                raise ValueError(f"SAM returned an empty mask for prompt {obj_id}; try another prompt")
            labels[masks[0]] = obj_id
    return labels
