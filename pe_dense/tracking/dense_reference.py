"""The classic dense formulation of label propagation (DINO's eval_video_segmentation.py).

It materialises the full (context * HW, HW) affinity and a dense (HW, HW) neighbourhood mask. It is
kept as the independent implementation that tests and benchmarks compare
:func:`pe_dense.tracking.propagate_labels` with; do not use it on real videos.
"""

from __future__ import annotations

from typing import Sequence

import torch


def neighbourhood_mask(h: int, w: int, radius: int) -> torch.Tensor:
    """(HW, HW) float mask, 1 where two tokens are within ``radius`` in both coordinates."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    near = ((ys[:, None] - ys[None]).abs() <= radius) & ((xs[:, None] - xs[None]).abs() <= radius)
    return near.float()


def propagate_labels_dense(
    target: torch.Tensor,
    sources: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    *,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as :func:`propagate_labels`: (h, w, C) normalised maps, (h, w, L) labels."""
    h, w, c = target.shape
    n = len(sources)
    feat_tar = target.reshape(1, h * w, c).expand(n, -1, -1)
    feat_src = torch.stack([s.reshape(h * w, c).T for s in sources])  # n x C x HW
    aff = torch.exp(torch.bmm(feat_tar, feat_src) / temperature)  # n x HW (targets) x HW (sources)
    if radius > 0:
        aff *= neighbourhood_mask(h, w, radius) if mask is None else mask
    aff = aff.transpose(2, 1).reshape(-1, h * w)  # n*HW (sources) x HW (targets)
    top, _ = torch.topk(aff, dim=0, k=topk)
    aff[aff < top.min(dim=0).values] = 0
    aff = aff / aff.sum(dim=0, keepdim=True)
    segs = torch.cat([s.reshape(h * w, -1) for s in labels]).T  # L x n*HW
    return (segs @ aff).T.reshape(h, w, -1)
