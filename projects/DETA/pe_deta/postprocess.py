"""From DETA's outputs to detections: every (query, class) pair scored, then NMS or the released
soft-NMS, keeping the best ``max_detections``."""

from __future__ import annotations

from typing import Optional

import torch
from torchvision.ops import batched_nms, box_convert, box_iou

SOFT_NMS_METHODS = ("quad", "linear", "gaussian", "hard")


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, *, iou_threshold: float = 0.7,
             method: str = "quad", quad_scale: float = 0.5, gaussian_sigma: float = 0.5,
             prune_threshold: float = 0.001) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-wise soft-NMS (Bodla et al.) with the released DETA-for-PE decays. Returns (kept indices,
    their decayed scores) in decreasing score order.

    Repeatedly take the best box and decay the others of its class by their IoU u with it: "quad"
    (1 - u)^quad_scale where u > iou_threshold (the released default), "linear" 1 - u where u >
    iou_threshold, "gaussian" exp(-u^2 / sigma), "hard" drop where u >= iou_threshold (plain NMS);
    boxes whose score falls to ``prune_threshold`` or below leave.
    """
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"unknown soft-NMS method '{method}', expected one of {SOFT_NMS_METHODS}")
    if boxes.numel() == 0:
        return boxes.new_zeros(0, dtype=torch.long), scores.new_zeros(0)
    # Offsetting each class far away keeps classes apart in one IoU computation.
    boxes = boxes + (classes.to(boxes) * (boxes.max() + 1))[:, None]
    scores = scores.clone()
    index = torch.arange(len(scores), device=scores.device)
    kept, kept_scores = [], []
    while scores.numel():
        top = int(scores.argmax())
        kept.append(index[top])
        kept_scores.append(scores[top])
        iou = box_iou(boxes[top:top + 1], boxes)[0]
        if method == "quad":
            decay = torch.where(iou > iou_threshold, (1 - iou).clamp(min=0) ** quad_scale, torch.ones_like(iou))
        elif method == "linear":
            decay = torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
        elif method == "gaussian":
            decay = torch.exp(-(iou**2) / gaussian_sigma)
        else:
            decay = (iou < iou_threshold).to(iou)
        scores = scores * decay
        alive = scores > prune_threshold
        alive[top] = False
        boxes, scores, index = boxes[alive], scores[alive], index[alive]
    return torch.stack(kept), torch.stack(kept_scores)


def detections(logits: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], *,
               max_detections: Optional[int] = 100,
               nms_thresh: float = 0.7, use_soft_nms: bool = False, soft_nms_method: str = "quad",
               quad_scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes (K, 4) as x0, y0, x1, y1 in pixels of ``image_size``, scores (K,), classes (K,)) of one
    image from its logits (Q, C) and boxes (Q, 4) (cx, cy, w, h normalised). Every (query, class) pair
    is a candidate; the best 10000 go through NMS (2000 through soft-NMS, as released).
    ``max_detections=None`` keeps every survivor."""
    num_classes = logits.shape[1]
    scores = logits.sigmoid().flatten()
    candidates = scores.topk(min(2000 if use_soft_nms else 10000, scores.numel())).indices
    height, width = image_size
    scale = boxes.new_tensor([width, height, width, height])
    xyxy = box_convert(boxes, "cxcywh", "xyxy")[candidates // num_classes] * scale
    scores, classes = scores[candidates], candidates % num_classes
    if use_soft_nms:
        keep, scores = soft_nms(xyxy, scores, classes, iou_threshold=nms_thresh, method=soft_nms_method,
                                quad_scale=quad_scale)
        keep, scores = keep[:max_detections], scores[:max_detections]
    else:
        keep = batched_nms(xyxy, scores, classes, nms_thresh)[:max_detections]
        scores = scores[keep]
    return xyxy[keep], scores, classes[keep]
