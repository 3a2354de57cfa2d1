"""DETA's losses: sigmoid focal classification, L1 and GIoU box losses, on the proposals and on every
decoder layer, over the pairs chosen by the IoU assigners."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
from detectron2.utils import comm
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from .assigner import Pairs, ProposalAssigner, QueryAssigner


class DETACriterion(nn.Module):
    """The weighted loss terms of one batch.

    Targets are dicts with ``labels`` (M,) and ``boxes`` (M, 4) as (cx, cy, w, h) normalised by the
    image size. Loss names are DETR's: ``loss_ce``, ``loss_bbox``, ``loss_giou`` for the last layer,
    with ``_<i>`` for decoder layer i and ``_enc`` for the proposals (which are class-agnostic: every
    box is class 0 for them). Each is normalised by the mean number of boxes per GPU.
    """

    def __init__(self, num_classes: int, num_queries: int, class_weight: float = 1.0, bbox_weight: float = 5.0,
                 giou_weight: float = 2.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 proposal_assigner: ProposalAssigner | None = None, query_assigner: QueryAssigner | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.weights = {"loss_ce": class_weight, "loss_bbox": bbox_weight, "loss_giou": giou_weight}
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.proposal_assigner = proposal_assigner or ProposalAssigner()
        self.query_assigner = query_assigner or QueryAssigner(num_queries)

    def terms(self, logits: torch.Tensor, boxes: torch.Tensor, targets: Sequence[Mapping], pairs: Sequence[Pairs],
              num_boxes: float) -> dict[str, torch.Tensor]:
        """Weighted loss_ce, loss_bbox, loss_giou of one set of predictions (B, N, C) and (B, N, 4)."""
        batch = torch.cat([torch.full_like(p, b) for b, (p, _) in enumerate(pairs)])
        pred = torch.cat([p for p, _ in pairs])
        target_classes = torch.cat([t["labels"][g] for t, (_, g) in zip(targets, pairs)])
        onehot = torch.zeros_like(logits)
        onehot[batch, pred, target_classes] = 1.0
        loss_ce = sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma, reduction="sum") / num_boxes
        matched = boxes[batch, pred]
        target_boxes = torch.cat([t["boxes"][g] for t, (_, g) in zip(targets, pairs)])
        loss_bbox = (matched - target_boxes).abs().sum() / num_boxes
        giou = generalized_box_iou(box_convert(matched, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"))
        loss_giou = (1 - giou.diagonal()).sum() / num_boxes
        raw = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        return {k: v * self.weights[k] for k, v in raw.items()}

    def forward(self, outputs: Mapping, targets: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """``outputs``: ``logits`` (layers, B, Q, C) and ``boxes`` (layers, B, Q, 4) of every decoder
        layer, ``init_reference`` (B, Q, 4), ``enc_logits``, ``enc_boxes`` and ``anchors`` (B, S, ...)."""
        num_boxes = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=outputs["boxes"].device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num_boxes)
        num_boxes = max(num_boxes.item() / comm.get_world_size(), 1.0)

        query_pairs = [self.query_assigner(ref.detach(), t["boxes"])
                       for ref, t in zip(outputs["init_reference"], targets)]
        losses = {}
        layers = len(outputs["logits"])
        for i in range(layers):
            suffix = "" if i == layers - 1 else f"_{i}"
            terms = self.terms(outputs["logits"][i], outputs["boxes"][i], targets, query_pairs, num_boxes)
            losses.update({k + suffix: v for k, v in terms.items()})

        agnostic = [{"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets]
        proposal_pairs = [self.proposal_assigner(a, t["boxes"]) for a, t in zip(outputs["anchors"], targets)]
        terms = self.terms(outputs["enc_logits"], outputs["enc_boxes"], agnostic, proposal_pairs, num_boxes)
        losses.update({k + "_enc": v for k, v in terms.items()})
        return losses
