"""Attention weights of any block, recomputed from the block's input (docs/sharper.md#attention-maps).

The forward pass never forms the attention matrix (it runs a fused kernel), so the weights are
recomputed here: the blocks before ``block`` run as usual, then the block's q and k come from its own
``ln_1`` and packed projection, rotated by the same RoPE tables, and softmax(q kᵀ / √d) is formed in
float32. The normal forward is untouched and pays nothing.

Windowed blocks attend within their window only: the weights between tokens of different windows are
zero. Where the grid is not a multiple of the window, the zero padding tokens ViTDet adds take part in
the softmax as they do in the forward, and their share is left out of the returned rows.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .rope import apply_rope
from .vision_transformer import PEVisionTransformer, SelfAttention
from .windows import window_partition


def _probabilities(attn: SelfAttention, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d) of (B, N, C) tokens: (B, heads, N, N), float32 also under autocast."""
    b, n, _ = x.shape
    with torch.autocast(x.device.type, enabled=False):
        qkv = F.linear(x.float(), attn.in_proj_weight.float(), attn.in_proj_bias.float())
        q, k = apply_rope(qkv.view(b, n, 3, attn.heads, -1)[:, :, :2], rope).permute(2, 0, 3, 1, 4)
        return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)


def _windows_to_grid(probs: torch.Tensor, batch: int, grid_h: int, grid_w: int, window: int) -> torch.Tensor:
    """Per-window weights (B * windows, heads, w*w, w*w) -> (B, heads, N, N) over the grid's N tokens,
    zero between windows; padding keys are dropped."""
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    windows_per_row = -(-grid_w // window)
    window_of = ((rows // window) * windows_per_row + cols // window).flatten()
    index_in_window = ((rows % window) * window + cols % window).flatten()
    n = grid_h * grid_w
    # the grid token of every (window, place in window); n for padding, a column cut away at the end
    token_at = torch.full((window_of.max() + 1, window * window), n)
    token_at[window_of, index_in_window] = torch.arange(n)
    per_window = probs.unflatten(0, (batch, -1))  # (B, windows, heads, w*w, w*w)
    query_rows = per_window[:, window_of, :, index_in_window].permute(1, 2, 0, 3)  # (B, heads, N, w*w)
    keys = token_at[window_of].to(probs.device).expand(*query_rows.shape[:2], -1, -1)
    full = probs.new_zeros(*query_rows.shape[:3], n + 1)
    return full.scatter_(-1, keys, query_rows)[..., :n]


@torch.inference_mode()
def attention_weights(encoder: PEVisionTransformer, images: torch.Tensor, block: int) -> torch.Tensor:
    """Attention weights (B, heads, N, N) of ``block`` (negative counts from the end) on preprocessed
    images, N = class token + h * w in the encoder's token order; row i is what token i attends to."""
    if not isinstance(encoder, PEVisionTransformer):
        raise ValueError(f"attention maps are read from PE's own blocks, not from {encoder.config.name}")
    index = encoder.layer_index(block)
    x, pos = encoder.embed(images)
    x = encoder.transformer(x, pos, index - 1)  # the blocks before it; none for block 0
    layer = encoder.transformer.resblocks[index]
    y = layer.ln_1(x)
    if not layer.window_size:
        return _probabilities(layer.attn, y, pos.rope)
    windows, _ = window_partition(y, pos.grid_h, pos.grid_w, layer.window_size)
    probs = _probabilities(layer.attn, windows, pos.window_rope)
    return _windows_to_grid(probs, images.shape[0], pos.grid_h, pos.grid_w, layer.window_size)


def attention_map(encoder: PEVisionTransformer, images: torch.Tensor, block: int,
                  query: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """What one token attends to, per head, as maps over the patch tokens: (B, heads, h, w).

    ``query`` is a token (row, column) of the grid; None is the class token (models that have one). The
    class token's own share is not in the map: a map sums to one minus it. Average over heads
    (``.mean(1)``) for one map per image.
    """
    grid_h, grid_w = encoder.token_grid(*images.shape[-2:])
    first = int(encoder.use_cls_token)
    if query is None:
        if not first:
            raise ValueError(f"{encoder.config.name} runs without a class token: choose a query point")
        row = 0
    else:
        r, c = query
        if not (0 <= r < grid_h and 0 <= c < grid_w):
            raise ValueError(f"query token {query} is outside the {grid_h}x{grid_w} grid")
        row = first + r * grid_w + c
    weights = attention_weights(encoder, images, block)[:, :, row, first:]
    return weights.unflatten(-1, (grid_h, grid_w))
