"""DETA (Ouyang-Zhang et al., 2022) as a detectron2 model: two-stage Deformable DETR with iterative
box refinement and IoU-based assignment, on a PE backbone.

Takes and returns what every detectron2 model does (lists of dicts with ``image`` and
``instances``; losses in training, ``Instances`` at the input's original size in inference), so
``tools/train_net.py``, detectron2's evaluators and ``pe-dense detect`` work with it unchanged.
"""

from __future__ import annotations

import copy
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.modeling import Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torchvision.ops import box_convert

from .checkpoint import adapt_checkpoint
from .criterion import DETACriterion
from .postprocess import detections
from .transformer import MLP, DeformableTransformer, inverse_sigmoid, mask_sine_embedding


class DETA(nn.Module):
    """Args:
        backbone: a detectron2 backbone whose outputs (in ``output_shape()`` order) are the first
            feature levels; the remaining ``transformer`` levels are stride-2 3x3 convolutions on top.
        transformer: the :class:`DeformableTransformer`.
        criterion: the :class:`DETACriterion`.
        num_classes: object classes (sigmoid scores, no background class).
        pixel_mean, pixel_std: input normalisation (0-255 scale, the backbone's channel order).
        input_format: "RGB" or "BGR", read by the dataset mapper and ``pe-dense detect``.
        max_detections, nms_thresh, use_soft_nms, soft_nms_method, quad_scale: inference.
        released_class_ids: the rows of a released checkpoint's class heads that are this model's
            classes, in order (``pe_deta.checkpoint``); None keeps them all.
    """

    def __init__(self, *, backbone: Backbone, transformer: DeformableTransformer, criterion: DETACriterion,
                 num_classes: int, pixel_mean: Sequence[float], pixel_std: Sequence[float], input_format: str = "RGB",
                 max_detections: int = 100, nms_thresh: float = 0.7, use_soft_nms: bool = False,
                 soft_nms_method: str = "quad", quad_scale: float = 0.5,
                 released_class_ids: Optional[Sequence[int]] = None):
        super().__init__()
        self.backbone = backbone
        self.transformer = transformer
        self.criterion = criterion
        self.num_classes = num_classes
        self.input_format = input_format
        self.released_class_ids = None if released_class_ids is None else list(released_class_ids)
        self.inference_options = dict(max_detections=max_detections, nms_thresh=nms_thresh, use_soft_nms=use_soft_nms,
                                      soft_nms_method=soft_nms_method, quad_scale=quad_scale)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

        d = transformer.d_model
        channels = [s.channels for s in backbone.output_shape().values()]
        extra = transformer.level_embed.shape[0] - len(channels)
        if extra < 0:
            raise ValueError(f"the backbone gives {len(channels)} maps but the transformer has only "
                             f"{transformer.level_embed.shape[0]} levels")
        projections = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d)) for c in channels]
        for i in range(extra):
            projections.append(nn.Sequential(nn.Conv2d(channels[-1] if i == 0 else d, d, kernel_size=3, stride=2,
                                                       padding=1), nn.GroupNorm(32, d)))
        self.input_proj = nn.ModuleList(projections)
        # One class and one box head per decoder layer, and one more for the encoder's proposals.
        heads = transformer.num_decoder_layers + 1
        class_embed, bbox_embed = nn.Linear(d, num_classes), MLP(d, d, 4, 3)
        self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(heads))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(heads))
        self.reset_head_parameters()

    @torch.no_grad()
    def reset_head_parameters(self) -> None:
        """Deformable DETR's initialisation: class bias at a 1 % prior, box deltas zero, xavier projections."""
        for head in self.class_embed:
            nn.init.constant_(head.bias, -math.log((1 - 0.01) / 0.01))
        for head in self.bbox_embed:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ pieces
    def preprocess_image(self, batched_inputs) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        constraints = self.backbone.padding_constraints
        square = constraints.get("square_size", 0)
        too_big = [tuple(im.shape[-2:]) for im in images if square and max(im.shape[-2:]) > square]
        if too_big:
            raise ValueError(f"images of size {too_big} exceed the backbone's square padding of {square} px: resize "
                             f"them in the data mapper (the test augmentations of the config) first")
        return ImageList.from_tensors(images, padding_constraints=constraints)

    def levels(self, images: ImageList):
        """Per level: projected features (B, d, H, W), padding masks (B, H, W) and sine positions."""
        b, _, h, w = images.tensor.shape
        mask = torch.ones((b, h, w), dtype=torch.bool, device=self.device)
        for i, (ih, iw) in enumerate(images.image_sizes):
            mask[i, :ih, :iw] = False
        features = list(self.backbone(images.tensor).values())
        srcs = [proj(f) for proj, f in zip(self.input_proj, features)]
        for proj in self.input_proj[len(features):]:
            srcs.append(proj(features[-1] if len(srcs) == len(features) else srcs[-1]))
        masks = [F.interpolate(mask[None].float(), size=s.shape[-2:])[0].bool() for s in srcs]
        return srcs, masks, [mask_sine_embedding(m, self.transformer.d_model // 2).to(s.dtype) for s, m in
                             zip(srcs, masks)]

    def forward_raw(self, images: ImageList) -> dict:
        """Everything the losses and inference read: per decoder layer ``logits`` (layers, B, Q, C) and
        ``boxes`` (layers, B, Q, 4); the proposals' ``init_reference``, ``enc_logits``, ``enc_boxes``
        and ``anchors``. Boxes are (cx, cy, w, h) relative to each image's unpadded size."""
        out = self.transformer(*self.levels(images), self.class_embed, self.bbox_embed)
        references = [out.init_reference, *out.inter_references[:-1]]
        logits, boxes = [], []
        for lvl, (hidden, reference) in enumerate(zip(out.hidden_states, references)):
            logits.append(self.class_embed[lvl](hidden))
            boxes.append((self.bbox_embed[lvl](hidden) + inverse_sigmoid(reference)).sigmoid())
        return {"logits": torch.stack(logits), "boxes": torch.stack(boxes), "init_reference": out.init_reference,
                "enc_logits": out.enc_logits, "enc_boxes": out.enc_boxes_unact.sigmoid(), "anchors": out.anchors}

    def targets(self, batched_inputs) -> list[dict]:
        targets = []
        for x in batched_inputs:
            instances = x["instances"].to(self.device)
            h, w = instances.image_size
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
            boxes = box_convert(instances.gt_boxes.tensor / scale, "xyxy", "cxcywh")
            targets.append({"labels": instances.gt_classes, "boxes": boxes})
        return targets

    def inference(self, raw: dict, image_sizes) -> list[Instances]:
        results = []
        for logits, boxes, size in zip(raw["logits"][-1], raw["boxes"][-1], image_sizes):
            xyxy, scores, classes = detections(logits, boxes, size, **self.inference_options)
            result = Instances(size)
            result.pred_boxes, result.scores, result.pred_classes = Boxes(xyxy), scores, classes
            results.append(result)
        return results

    def adapt_checkpoint(self, state: dict) -> tuple[dict, list[str]]:
        """Called by ``PEDetectionCheckpointer`` before loading: released layouts and encoder position
        grids fitted to this model (``pe_deta.checkpoint``)."""
        return adapt_checkpoint(state, self)

    # ------------------------------------------------------------------ detectron2 interface
    def forward(self, batched_inputs):
        images = self.preprocess_image(batched_inputs)
        raw = self.forward_raw(images)
        if self.training:
            return self.criterion(raw, self.targets(batched_inputs))
        results = self.inference(raw, images.image_sizes)
        return [{"instances": detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1]))}
                for r, x, s in zip(results, batched_inputs, images.image_sizes)]
