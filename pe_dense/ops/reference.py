"""Pure-PyTorch multi-scale deformable attention: the semantics every kernel must match.

As the original Deformable DETR op: per level, ``grid_sample`` with bilinear interpolation, zero
padding and align_corners=False at locations in [0, 1] (x then y), weighted by the attention
weights and summed over levels and points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights) -> torch.Tensor:
    """(N, Lq, heads * channels) from value (N, S, heads, channels), spatial_shapes (L, 2) of (H, W),
    sampling_locations (N, Lq, heads, L, P, 2) and attention_weights (N, Lq, heads, L, P)."""
    n, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    sizes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    per_level = value.split([h * w for h, w in sizes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(sizes):
        # (N, h*w, heads, C) -> (N*heads, C, h, w); (N, Lq, heads, P, 2) -> (N*heads, Lq, P, 2)
        level_value = per_level[level].flatten(2).transpose(1, 2).reshape(n * heads, channels, h, w)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # (N*heads, C, Lq, P)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, queries, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*heads, C, Lq)
    return out.view(n, heads * channels, queries).transpose(1, 2).contiguous()
