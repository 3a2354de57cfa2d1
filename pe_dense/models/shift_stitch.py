"""Denser token grids from the released model, without training: shift-and-stitch (docs/sharper.md#shift-and-stitch).

The encoder sees one token per ``patch`` pixels. Running it on ``k * k`` copies of the image shifted by
multiples of ``stride = patch / k`` pixels and interleaving the ``k * k`` grids gives one token per
``stride`` pixels, each computed by the unchanged model on a real image: the cost is ``k * k`` passes,
run as one batch.

The shifted image of shift (i, j) drops the first ``i * stride`` rows and ``j * stride`` columns and
repeats the last row and column (edge replication) to keep the input size, so every pass has the same
token grid and the interleaved grid is ``k`` times denser on each side. Token (r, c) of shift (i, j)
lands at (r * k + i, c * k + j); its patch starts at pixel (r * k + i) * stride, so the dense grid's
token n is centred at ``n * stride + patch / 2``: ``(patch - stride) / 2`` pixels after the centre of
a uniform grid of that stride.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .vision_transformer import PEVisionTransformer


def stitch_factor(patch_size: int, stride: int) -> int:
    """k, the shifts per side that give tokens every ``stride`` pixels; the stride must divide the patch."""
    if stride < 1 or patch_size % stride:
        raise ValueError(f"stride {stride} does not divide the patch size {patch_size} (valid: "
                         f"{', '.join(str(s) for s in range(1, patch_size + 1) if patch_size % s == 0)})")
    return patch_size // stride


def shifted_images(images: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """The ``k * k`` shifted copies of a (B, 3, H, W) batch, shift-major: (k*k*B, 3, H, W), shift (i, j) at
    index i * k + j, each cropped by (i * stride, j * stride) at the top left and edge-replicated at the
    bottom right."""
    height, width = images.shape[-2:]
    extra = (k - 1) * stride
    padded = F.pad(images, (0, extra, 0, extra), mode="replicate") if extra else images
    return torch.cat([padded[..., i * stride:i * stride + height, j * stride:j * stride + width]
                      for i in range(k) for j in range(k)])


def interleave(grids: torch.Tensor, k: int) -> torch.Tensor:
    """(k*k*B, C, h, w) grids of the shifts, shift-major as :func:`shifted_images` -> (B, C, h*k, w*k)."""
    _, channels, h, w = grids.shape
    x = grids.view(k, k, -1, channels, h, w)  # (i, j, B, C, r, c) -> (B, C, r, i, c, j)
    return x.permute(2, 3, 4, 0, 5, 1).reshape(-1, channels, h * k, w * k)


def shift_and_stitch(encoder: PEVisionTransformer, images: torch.Tensor, stride: int,
                     layers: Sequence[int] = (-1,), norm: bool = False) -> list[torch.Tensor]:
    """Dense maps (B, C, H/stride, W/stride) after each block in ``layers``, from one batched run of the
    ``(patch/stride)**2`` shifted images; ``stride`` equal to the patch size is the plain forward."""
    k = stitch_factor(encoder.patch_size, stride)
    if k == 1:
        return encoder.dense_features_at(images, layers, norm=norm)
    maps = encoder.dense_features_at(shifted_images(images, k, stride), layers, norm=norm)
    return [interleave(m, k) for m in maps]
