"""Non-overlapping window partitioning of a token grid (ViTDet-style windowed attention).

The grid is zero-padded on the bottom/right to a multiple of the window size, as detectron2's ViTDet
does; padded tokens take part in attention unmasked and are cut away afterwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_partition(x: torch.Tensor, grid_h: int, grid_w: int, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, grid_h*grid_w, C) tokens -> (B * num_windows, window*window, C), plus the padded grid size."""
    b, _, c = x.shape
    pad_h, pad_w = -grid_h % window, -grid_w % window
    x = x.view(b, grid_h, grid_w, c)
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = grid_h + pad_h, grid_w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, padded: tuple[int, int], grid_h: int, grid_w: int,
                       window: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: back to (B, grid_h*grid_w, C) without the padding."""
    hp, wp = padded
    c = windows.shape[-1]
    x = windows.view(-1, hp // window, wp // window, window, window, c).transpose(2, 3).reshape(-1, hp, wp, c)
    if (hp, wp) != (grid_h, grid_w):
        x = x[:, :grid_h, :grid_w]
    return x.reshape(-1, grid_h * grid_w, c)
