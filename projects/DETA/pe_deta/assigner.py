"""DETA's IoU-based one-to-many assignment (Ouyang-Zhang et al., "NMS strikes back"), in place of
DETR's Hungarian matching, built on detectron2's own ``Matcher`` and ``subsample_labels``.

Both stages label each prediction by its best IoU with a ground-truth box, sample positives (as
Faster R-CNN's RPN and RoI heads do), and keep at most ``topk_per_gt`` positives per box: the
proposals with the highest IoU with that box. The returned pairs (prediction index, box index) are
what the losses supervise; every other prediction is background.
"""

from __future__ import annotations

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.sampling import subsample_labels
from torchvision.ops import box_convert, box_iou

Pairs = tuple[torch.Tensor, torch.Tensor]


def topk_per_gt(pred_idx: torch.Tensor, gt_idx: torch.Tensor, iou: torch.Tensor, k: int) -> Pairs:
    """Cap each box's positives at k: a box with c positives keeps its min(c, k) best-IoU predictions
    (among all predictions, as the released code does)."""
    if len(gt_idx) == 0:
        return pred_idx, gt_idx
    gts, counts = gt_idx.unique(return_counts=True)
    best = iou[gts].topk(min(k, iou.shape[1]), dim=1).indices
    keep = [(row[: int(c)], torch.full((min(int(c), row.numel()),), int(g), dtype=torch.long, device=row.device))
            for g, c, row in zip(gts, counts, best)]
    return torch.cat([p for p, _ in keep]), torch.cat([g for _, g in keep])


def _empty(device) -> Pairs:
    return torch.empty(0, dtype=torch.long, device=device), torch.empty(0, dtype=torch.long, device=device)


class IoUAssigner:
    """Label predictions by their best IoU with a box (``Matcher`` with ``thresholds`` and ``labels``,
    every box also taking its best prediction), sample ``num_samples`` with at most
    ``positive_fraction`` positives, and keep at most ``topk_per_gt`` positives per box."""

    def __init__(self, thresholds: list[float], labels: list[int], num_samples: int, positive_fraction: float,
                 topk_per_gt: int):
        self.matcher = Matcher(thresholds, labels, allow_low_quality_matches=True)
        self.num_samples, self.positive_fraction, self.k = num_samples, positive_fraction, topk_per_gt

    def __call__(self, predictions: torch.Tensor, gt_boxes: torch.Tensor) -> Pairs:
        """predictions (N, 4) and gt_boxes (M, 4), both (cx, cy, w, h) normalised."""
        if len(gt_boxes) == 0:
            return _empty(predictions.device)
        iou = box_iou(box_convert(gt_boxes, "cxcywh", "xyxy"), box_convert(predictions, "cxcywh", "xyxy"))
        matched, labels = self.matcher(iou)
        positive, _ = subsample_labels(labels, self.num_samples, self.positive_fraction, 0)
        return topk_per_gt(positive, matched[positive], iou, self.k)


class ProposalAssigner(IoUAssigner):
    """Stage 1, for the encoder's proposals (judged by their anchors): IoU >= 0.7 positive, < 0.3
    negative, 256 samples with up to half positives, top 4 per box."""

    def __init__(self, low: float = 0.3, high: float = 0.7, num_samples: int = 256, positive_fraction: float = 0.5,
                 topk_per_gt: int = 4):
        super().__init__([low, high], [0, -1, 1], num_samples, positive_fraction, topk_per_gt)


class QueryAssigner(IoUAssigner):
    """Stage 2, for the decoder's queries (judged by the proposals they start from): IoU >= 0.6
    positive, ``num_queries`` samples with up to a quarter positives, top 4 per box. The same pairs
    supervise every decoder layer."""

    def __init__(self, num_queries: int, threshold: float = 0.6, positive_fraction: float = 0.25,
                 topk_per_gt: int = 4):
        super().__init__([threshold], [0, 1], num_queries, positive_fraction, topk_per_gt)
