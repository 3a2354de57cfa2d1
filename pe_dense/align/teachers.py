"""The two teachers of spatial alignment (docs/alignment.md), both frozen, both fed the same batch
of square RGB images in [0, 1] as the student:

- :class:`FeatureTeacher`: a PE encoder's tokens after an intermediate block (self-alignment), or
  after the last block of a bigger model (distillation into T/S/B/L students);
- :class:`SAMCorrespondenceTeacher`: for every student token, the P² mask logits that a SAM-family
  model gives at that token for a regular P x P grid of point prompts.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..integrations.sam import MASK_CHOICES, PromptableSegmenter
from ..models.configs import PEVisionConfig
from ..models.vision_transformer import PEVisionTransformer

# PE-Core-G's best spatial layer per the paper's layer-wise probing: block 41 of 50.
G_TEACHER_LAYER, G_DEPTH = 41, 50
# On the CPU a decoder call holds as many prompts as keep their image tokens (4 MiB a prompt at 1024 px)
# within this; its temporaries then stay below glibc's largest mmap threshold (32 MiB), so freed ones can
# be reused (pe_dense.align.allocator) instead of faulted in anew.
CPU_CHUNK_BYTES = 16 * 2**20


def default_teacher_layer(config: PEVisionConfig) -> int:
    """Block whose tokens teach: 41 for G (the paper's choice); for other depths the block at the
    same relative depth (10 of 12 for T/S/B, 20 of 24 for L). Those are our choice, not probed: a
    layer-wise probe of your own model (e.g. linear segmentation per layer) may find a better one."""
    return round(config.depth * G_TEACHER_LAYER / G_DEPTH)


def pe_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """[0, 1] images resized to ``size`` and mapped to [-1, 1], as PE was trained."""
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return images * 2.0 - 1.0


class FeatureTeacher(nn.Module):
    """A frozen PE encoder whose patch tokens after block ``layer`` are the targets (B, N, width).

    Blocks after ``layer`` are dropped, so they cost neither memory nor time.
    """

    def __init__(self, encoder: PEVisionTransformer, layer: Optional[int] = None, image_size: Optional[int] = None):
        super().__init__()
        self.layer = encoder.layer_index(default_teacher_layer(encoder.config) if layer is None else layer)
        encoder.truncate(self.layer)
        self.encoder = encoder.eval().requires_grad_(False)
        self.image_size = image_size or encoder.config.image_size
        encoder.token_grid(self.image_size, self.image_size)  # a clear error for a size that is not a patch multiple

    @property
    def width(self) -> int:
        return self.encoder.width

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: never in training mode (drop path off)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.forward_features(pe_input(images, self.image_size), layer=self.layer)
        return tokens[:, int(self.encoder.use_cls_token):]


def point_grid(points_per_side: int, image_size: int, device=None) -> torch.Tensor:
    """(P², 2) (x, y) pixel coordinates of a P x P grid at cell centres, row by row, as SAM's
    automatic mask generator places its points."""
    centres = (torch.arange(points_per_side, dtype=torch.float32, device=device) + 0.5) * image_size / points_per_side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


class SAMCorrespondenceTeacher(nn.Module):
    """Per-token mask-logit vectors (B, h*w, P²) from a SAM-family model prompted with a P x P grid.

    Each image is encoded once; its P² single-point prompts are decoded up to ``points_per_batch`` at
    a time. Each point's low-resolution mask logits are resized (bilinear, antialiased) to the
    student's token grid. The alignment target is the cosine similarity of these vectors between
    tokens (``pairwise_similarity_loss`` computes it without building the N x N matrix).

    Args:
        segmenter: from :func:`pe_dense.integrations.sam.build_segmenter`.
        points_per_side: P (the paper: 32, i.e. 1024 prompts).
        points_per_batch: the most prompts per decoder call; memory grows linearly with it.
        cpu_chunk_bytes: on the CPU, fewer prompts per call where their image tokens (4 MiB per prompt at
            1024 px) would pass this: 4 prompts at 1024 px and 64 at 256 px by default. The targets do
            not depend on it.
        mask: "single" takes the single-mask output (SAM 2.1 falls back to its best multimask output
            when that mask is unstable); "best" takes the multimask output with the highest predicted IoU.
    """

    def __init__(self, segmenter: PromptableSegmenter, points_per_side: int = 32, points_per_batch: int = 64,
                 mask: str = "single", cpu_chunk_bytes: int = CPU_CHUNK_BYTES):
        super().__init__()
        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError(f"points_per_side and points_per_batch must be positive, got {points_per_side} "
                             f"and {points_per_batch}")
        if mask not in MASK_CHOICES:
            raise ValueError(f"mask must be one of {MASK_CHOICES}, got '{mask}'")
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self.cpu_chunk_bytes = cpu_chunk_bytes
        self.mask = mask

    @property
    def image_size(self) -> int:
        return self.segmenter.image_size

    def train(self, mode: bool = True):
        return super().train(False)

    def fingerprint(self) -> dict:
        """What the targets depend on besides the image and the weights (for target caches)."""
        return {"family": self.segmenter.family, "image_size": self.image_size,
                "points_per_side": self.points_per_side, "mask": self.mask}

    @torch.no_grad()
    def forward(self, images: torch.Tensor, token_grid: tuple[int, int]) -> torch.Tensor:
        return self.decode(self.segmenter.encode(images), token_grid)

    @torch.no_grad()
    def decode(self, state: dict, token_grid: tuple[int, int]) -> torch.Tensor:
        """The targets (B, h*w, P²) of images already encoded by ``self.segmenter.encode``."""
        device = state["tokens"].device
        points = point_grid(self.points_per_side, self.image_size, device=device)
        per_call = self.points_per_call(state, device)
        return torch.stack([self._image_targets(state, i, points, token_grid, per_call)
                            for i in range(len(state["tokens"]))])

    def points_per_call(self, state: dict, device: torch.device) -> int:
        """``points_per_batch``, on the CPU capped by ``cpu_chunk_bytes`` (at least one)."""
        if device.type != "cpu":
            return self.points_per_batch
        return max(1, min(self.points_per_batch, self.cpu_chunk_bytes // self.segmenter.point_bytes(state)))

    def _image_targets(self, state: dict, index: int, points: torch.Tensor, token_grid, per_call: int):
        maps = []
        for start in range(0, points.shape[0], per_call):
            logits, iou = self.segmenter.decode(state, index, points[start: start + per_call],
                                                multimask=self.mask == "best")
            if self.mask == "best":
                logits = logits.gather(1, iou.argmax(1)[:, None, None, None].expand(-1, 1, *logits.shape[2:]))
            maps.append(F.interpolate(logits.float(), size=token_grid, mode="bilinear", align_corners=False,
                                      antialias=True).flatten(1))
        return torch.cat(maps).T  # (h*w tokens, P² points)
