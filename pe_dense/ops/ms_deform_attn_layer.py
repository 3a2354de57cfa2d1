"""The MSDeformAttn layer of Deformable DETR: projections to sampling offsets and attention weights
around reference points, with the standard initialisation, over :func:`ms_deform_attn`."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ms_deform_attn import ms_deform_attn
from .validation import ShapesLike, as_level_tensors


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with ``heads`` heads sampling ``points`` points per level.

    Args:
        dim: model width; must be divisible by ``heads``.
        levels, heads, points: feature levels, attention heads, sampling points per head and level.

    ``use_kernel`` (an attribute, default None) is passed to :func:`ms_deform_attn`: False runs the
    pure-PyTorch reference, e.g. to compare the two inside a whole model.
    """

    def __init__(self, dim: int = 256, levels: int = 4, heads: int = 8, points: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.use_kernel: Optional[bool] = None
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: head h starts sampling along direction 2*pi*h/heads, point k
        at distance k+1; uniform attention; xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2)
        grid = grid.repeat(1, self.levels, self.points, 1) * torch.arange(1, self.points + 1).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: ShapesLike,
        level_start_index: Optional[torch.Tensor] = None,
        padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """query (N, Lq, dim); reference_points (N, Lq, levels, 2) as (x, y) in [0, 1], or
        (N, Lq, levels, 4) boxes (cx, cy, w, h); input_flatten (N, S, dim); padding_mask (N, S), True
        where padded. Returns (N, Lq, dim)."""
        n, queries, _ = query.shape
        shapes, starts = as_level_tensors(spatial_shapes, level_start_index)
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, input_flatten.shape[1], self.heads, self.dim // self.heads)
        offsets = self.sampling_offsets(query).view(n, queries, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(n, queries, self.heads, self.levels * self.points)
        weights = F.softmax(weights, -1).view(n, queries, self.heads, self.levels, self.points)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W, H)
            normalizer = shapes.flip(-1).to(offsets.device, offsets.dtype, non_blocking=True)  # no host sync
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / self.points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points must end in 2 (points) or 4 (boxes), got {reference_points.shape[-1]}")
        out = ms_deform_attn(value, shapes, starts, locations, weights, use_kernel=self.use_kernel)
        return self.output_proj(out)
