"""2D rotary position embedding (RoPE) as the released PE models apply it (docs/encoder.md#rope).

Each head's channels form head_dim/2 adjacent pairs (x0, x1) that rotate together by one angle.
The first half of the pairs rotate with the token's column x, the second half with its row y,
using the frequencies 1 / theta^(2i/d) of a 1D rotary table of dim d = head_dim / 2.

Rotations are applied as one complex multiplication per pair, in float32 whatever the input dtype
(the released code also rotates in float32 and casts back). Exporters without complex numbers (ONNX)
get the same rotation in real arithmetic from a cos/sin table (docs/export.md#rope-in-real-arithmetic).
"""

from __future__ import annotations

from typing import Optional

import torch


def rope_frequencies(head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """The head_dim/4 frequencies of one axis, computed in float32 as the released code does."""
    d = head_dim // 2
    exponents = torch.arange(0, d, 2, device=device)[: d // 2].float() / d
    return 1.0 / (theta**exponents)


def axis_positions(n: int, *, offset: float = 0.0, pretrain_grid: Optional[int] = None, step: float = 1.0,
                   device=None) -> torch.Tensor:
    """Positions of a run of n tokens along one axis.

    Released models use the integer index plus ``offset`` (1 when a class token takes position 0);
    ``step`` < 1 places the tokens of a denser grid between them (overlapping patches,
    docs/sharper.md#overlapping-patches).
    With ``pretrain_grid`` set (the ViTDet detection backbone, docs/detection.md#vitdet-mask-r-cnn) positions are
    rescaled so the run spans the pretraining grid: k * pretrain_grid / n + 1.
    """
    k = torch.arange(n, device=device)
    if pretrain_grid is None:
        return (k.float() if step == 1.0 else k * step) + offset
    return k / n * pretrain_grid + 1


def rope_angles(
    grid_h: int,
    grid_w: int,
    head_dim: int,
    *,
    cls_token: bool = False,
    pretrain_grid: Optional[int] = None,
    step: float = 1.0,
    device=None,
) -> torch.Tensor:
    """Rotation angle of every (token, channel pair): shape (cls + grid_h*grid_w, head_dim/2).

    Tokens are in row-major order; pair i < head_dim/4 uses the column, the rest the row. A class
    token comes first with angle 0 and shifts patch positions to start at 1. ``step``: see
    :func:`axis_positions`.
    """
    freqs = rope_frequencies(head_dim, device=device)
    offset = 1.0 if cls_token else 0.0
    ax = axis_positions(grid_w, offset=offset, pretrain_grid=pretrain_grid, step=step, device=device)[:, None] * freqs
    ay = axis_positions(grid_h, offset=offset, pretrain_grid=pretrain_grid, step=step, device=device)[:, None] * freqs
    angles = torch.cat([ax[None, :, :].expand(grid_h, -1, -1), ay[:, None, :].expand(-1, grid_w, -1)], dim=-1)
    angles = angles.reshape(grid_h * grid_w, head_dim // 2)
    if cls_token:
        angles = torch.cat([angles.new_zeros(1, head_dim // 2), angles])
    return angles


def rope_table(angles: torch.Tensor) -> torch.Tensor:
    """Unit complex numbers exp(i * angle), the form :func:`apply_rope` multiplies by."""
    return torch.polar(torch.ones_like(angles), angles)


def rope_cos_sin(angles: torch.Tensor) -> torch.Tensor:
    """The real form of :func:`rope_table`: cos and sin of every angle, each repeated for both channels
    of its pair, stacked as (2, ..., head_dim)."""
    angles = angles.repeat_interleave(2, dim=-1)
    return torch.stack([angles.cos(), angles.sin()])


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """Every adjacent channel pair (a, b) turned a quarter: (-b, a)."""
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([-b, a], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs of ``x`` (..., head_dim) by ``table``: complex from :func:`rope_table`,
    broadcastable to (..., head_dim/2), or real from :func:`rope_cos_sin`, (2, ...) broadcastable to x.

    ``x`` may be a strided view (e.g. q and k sliced out of a packed qkv projection); the result is
    a new contiguous tensor of x's dtype.
    """
    if not table.is_complex():  # (a, b) -> (a cos - b sin, b cos + a sin), as the complex product
        cos, sin = table.unbind(0)
        x32 = x.float()
        return (x32 * cos + rotate_pairs(x32) * sin).to(x.dtype)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * table).flatten(-2).to(x.dtype)
