"""DETA's released test-time augmentation: each image at several sizes and mirrored, the detections of
every view merged with soft-NMS.

For each size S the image is resized so that its longer side is S (the released views: 1792, the test
size of the 1824 model, then 1728, 1536 and 1344), and run as it is and flipped. Each view's
detections (the model's own NMS or soft-NMS, without the 100 cap) are mapped back to the original
image; a size keeps only boxes whose area lies in its range (the released ranges drop boxes smaller
than 64 x 64 px from the two smallest sizes); all are merged with soft-NMS and the best
``max_detections`` kept. Use with more queries (the released TTA
runs 2000) and soft-NMS in the model: see the COCO 1824 config.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from torch.nn.parallel import DistributedDataParallel

from .meta_arch import DETA
from .postprocess import detections, soft_nms


class DETAWithTTA(nn.Module):
    """A DETA in eval mode behind flip x multi-size testing; takes and returns what the model does.

    Args:
        model: the DETA (a DDP wrapper is unwrapped).
        sizes: longer side of each view, in pixels.
        size_ranges: per size, (min, max) side of the square whose area bounds the kept boxes' areas,
            in pixels of the original image; None keeps every box.
        flip: add the mirrored view of every size.
        nms_thresh, soft_nms_method, quad_scale, max_detections: the merge.
    """

    def __init__(self, model: DETA, sizes: Sequence[int] = (1792, 1728, 1536, 1344),
                 size_ranges: Optional[Sequence[Sequence[float]]] = None, flip: bool = True, nms_thresh: float = 0.7,
                 soft_nms_method: str = "quad", quad_scale: float = 0.5, max_detections: int = 100):
        super().__init__()
        self.model = model.module if isinstance(model, DistributedDataParallel) else model
        self.sizes = list(sizes)
        self.size_ranges = [tuple(r) for r in size_ranges] if size_ranges else [(0.0, float("inf"))] * len(sizes)
        if len(self.size_ranges) != len(self.sizes):
            raise ValueError(f"{len(self.sizes)} sizes but {len(self.size_ranges)} size ranges")
        self.flip = flip
        self.merge = dict(iou_threshold=nms_thresh, method=soft_nms_method, quad_scale=quad_scale)
        self.max_detections = max_detections

    def view_detections(self, image: np.ndarray, size: int, flipped: bool, original: tuple[int, int]):
        """Detections of one view of an (H, W, C) image, in pixels of the ``original`` (height, width)."""
        resized = T.ResizeShortestEdge(size, size).get_transform(image).apply_image(image)
        if flipped:
            resized = resized[:, ::-1]
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        raw = self.model.forward_raw(self.model.preprocess_image([{"image": tensor}]))
        boxes = raw["boxes"][-1][0]
        if flipped:  # boxes are relative to the view: mirror the centre back
            boxes = boxes * boxes.new_tensor([-1.0, 1, 1, 1]) + boxes.new_tensor([1.0, 0, 0, 0])
        options = {**self.model.inference_options, "max_detections": None}
        return detections(raw["logits"][-1][0], boxes, original, **options)

    @torch.no_grad()
    def detect(self, x: dict) -> Instances:
        image = x["image"]
        height, width = x.get("height", image.shape[1]), x.get("width", image.shape[2])
        pixels = image.permute(1, 2, 0).cpu().numpy()
        if pixels.shape[:2] != (height, width):  # the test mapper resized it: views start from the original size
            pixels = T.ResizeTransform(*pixels.shape[:2], height, width).apply_image(pixels)
        found = []
        for size, (low, high) in zip(self.sizes, self.size_ranges):
            for flipped in (False, True) if self.flip else (False,):
                xyxy, scores, classes = self.view_detections(pixels, size, flipped, (height, width))
                area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
                keep = (area > low**2) & (area < high**2)
                found.append((xyxy[keep], scores[keep], classes[keep]))
        xyxy, scores, classes = (torch.cat(parts) for parts in zip(*found))
        keep, merged = soft_nms(xyxy, scores, classes, **self.merge)
        keep, merged = keep[: self.max_detections], merged[: self.max_detections]
        result = Instances((height, width))
        result.pred_boxes = Boxes(xyxy[keep])
        result.pred_boxes.clip((height, width))
        result.scores, result.pred_classes = merged, classes[keep]
        return result

    def forward(self, batched_inputs):
        self.model.eval()
        return [{"instances": self.detect(x)} for x in batched_inputs]
