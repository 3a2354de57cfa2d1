"""Absolute position table of PE, adapted to the token grid of the current input.

The table is learned on the square pretraining grid (G x G rows, plus one row for the class token
where the model has one). Released models resize it bilinearly for other grids
(docs/encoder.md#class-token-and-position-table); the ViTDet detection backbones either tile it or
resize it bicubically (docs/detection.md#vitdet-mask-r-cnn).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

PosEmbedMode = Literal["bilinear", "bicubic", "tile"]
POS_EMBED_MODES = ("bilinear", "bicubic", "tile")


def grid_side(num_patch_rows: int) -> int:
    """Side G of the square grid a table of G*G patch rows covers."""
    side = math.isqrt(num_patch_rows)
    if side * side != num_patch_rows:
        raise ValueError(f"position table has {num_patch_rows} patch rows, which is not a square grid")
    return side


def adapt_pos_embed(patch_table: torch.Tensor, grid_h: int, grid_w: int,
                    mode: PosEmbedMode = "bilinear", resize_native: bool = False) -> torch.Tensor:
    """Rows for a grid_h x grid_w grid from a (G*G, C) table of patch positions (no class row).

    ``resize_native`` resizes at the table's own grid too, which gives the table back exactly, for exports
    whose grid size is symbolic (docs/export.md#the-graph).
    """
    side = grid_side(patch_table.shape[0])
    if not resize_native and (grid_h, grid_w) == (side, side):
        return patch_table
    grid = patch_table.reshape(side, side, -1)
    if mode == "tile":
        reps = (math.ceil(grid_h / side), math.ceil(grid_w / side), 1)
        return grid.tile(reps)[:grid_h, :grid_w].reshape(grid_h * grid_w, -1)
    if mode not in POS_EMBED_MODES:
        raise ValueError(f"unknown position table mode '{mode}', expected one of {POS_EMBED_MODES}")
    resized = F.interpolate(grid.permute(2, 0, 1)[None], size=(grid_h, grid_w), mode=mode, align_corners=False)
    return resized[0].permute(1, 2, 0).reshape(grid_h * grid_w, -1)


def fractional_rows(rows: torch.Tensor, grid_h: int, grid_w: int, k: int) -> torch.Tensor:
    """Rows of a grid k times denser than the grid_h x grid_w one that ``rows`` (grid_h*grid_w, C) cover, dense
    token n at position n / k of the sparse grid: bilinear between the sparse rows, the last row and
    column repeated past the end; dense tokens at multiples of k get the sparse rows exactly."""
    def weights(n: int) -> torch.Tensor:  # (n*k, n): the interpolation matrix of one axis
        position = torch.arange(n * k, dtype=torch.float64) / k
        low = position.floor().long().clamp(max=n - 1)
        high = (low + 1).clamp(max=n - 1)
        frac = (position - low).clamp(max=1.0)
        matrix = torch.zeros(n * k, n, dtype=torch.float64)
        matrix[torch.arange(n * k), low] += 1 - frac
        matrix[torch.arange(n * k), high] += frac
        return matrix.to(rows)

    grid = rows.reshape(grid_h, grid_w, -1)
    return torch.einsum("ah,hwc,bw->abc", weights(grid_h), grid, weights(grid_w)).reshape(grid_h * k * grid_w * k, -1)
