"""Zero-shot label propagation over frozen dense features (the DAVIS protocol of DINO / PE-Spatial).

Each new frame's tokens take soft labels from a context of earlier frames: the first frame (with its
given mask) and the previous ``context`` frames (with their propagated soft labels). A target token
scores every source token within ``radius`` tokens (a square neighbourhood, in every context frame)
by cosine similarity, keeps the ``topk`` best over all context frames together, weights them by
exp(cos / temperature) normalised to sum to one, and averages their soft labels.

The classic scripts build the full (context * HW, HW) affinity and a dense (HW, HW) neighbourhood
mask. Here targets are processed in square tiles: a tile only meets the sources inside its
neighbourhood's bounding box, so memory per tile is fixed by ``radius`` and the tile size, not by
the frame size, and no (HW)^2 tensor ever exists. Streaming frames through
:class:`LabelPropagator` keeps only the context, so memory is flat in video length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PropagationConfig:
    """The protocol's knobs; the defaults are the published DAVIS settings."""

    context: int = 7  # previous frames used besides the first one
    temperature: float = 0.1
    radius: int = 12  # neighbourhood half-size in tokens (square); 0 disables the restriction
    topk: int = 5

    def __post_init__(self):
        if self.context < 0 or self.radius < 0 or self.topk < 1 or not self.temperature > 0:
            raise ValueError(f"invalid propagation settings {self}: need context >= 0, radius >= 0, topk >= 1 "
                             "and temperature > 0")


def _check_maps(target: torch.Tensor, sources: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> None:
    if target.dim() != 3:
        raise ValueError(f"target features must be (h, w, C), got shape {tuple(target.shape)}")
    if not sources or len(sources) != len(labels):
        raise ValueError(f"need one label map per source frame, got {len(sources)} sources and {len(labels)} maps")
    for feats, soft in zip(sources, labels):
        if feats.shape != target.shape:
            raise ValueError(f"source features {tuple(feats.shape)} differ from target {tuple(target.shape)}")
        if soft.dim() != 3 or soft.shape[:2] != target.shape[:2] or soft.shape[2] != labels[0].shape[2]:
            raise ValueError(f"label maps must be (h, w, L) on the {tuple(target.shape[:2])} grid, "
                             f"got {tuple(soft.shape)}")


def corner_view(h: int, w: int, radius: int) -> int:
    """How many tokens of one (h, w) source a corner token sees within ``radius`` (0: the whole frame):
    the fewest of any token, so the most ``topk`` can be with a single source."""
    radius = radius if radius > 0 else max(h, w)
    return min(radius + 1, h) * min(radius + 1, w)


def propagate_labels(
    target: torch.Tensor,
    sources: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    *,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
    tile: int = 16,
) -> torch.Tensor:
    """Soft labels (h, w, L) of ``target`` from ``sources`` and their ``labels``.

    ``target`` and each source are L2-normalised (h, w, C) feature maps; ``labels`` are (h, w, L) soft
    labels. ``radius=0`` lets every source token compete (no neighbourhood restriction).
    """
    _check_maps(target, sources, labels)
    h, w, _ = target.shape
    radius = radius if radius > 0 else max(h, w)
    tile = min(tile, h, w) if radius < max(h, w) else max(h, w)  # no restriction: one tile is the frame
    if topk > len(sources) * corner_view(h, w, radius):
        raise ValueError(f"topk={topk} exceeds the sources some tokens can see")
    out = target.new_empty(h, w, labels[0].shape[2])
    rows = torch.arange(h, device=target.device)
    cols = torch.arange(w, device=target.device)
    for i0 in range(0, h, tile):
        i1 = min(i0 + tile, h)
        a0, a1 = max(i0 - radius, 0), min(i1 + radius, h)  # source rows any target of the tile can see
        near_y = (rows[i0:i1, None] - rows[None, a0:a1]).abs() <= radius
        for j0 in range(0, w, tile):
            j1 = min(j0 + tile, w)
            b0, b1 = max(j0 - radius, 0), min(j1 + radius, w)
            near_x = (cols[j0:j1, None] - cols[None, b0:b1]).abs() <= radius
            # (tile tokens, window tokens): both coordinates within the radius
            near = (near_y[:, None, :, None] & near_x[None, :, None, :]).flatten(2).flatten(0, 1)
            query = target[i0:i1, j0:j1].reshape(-1, target.shape[2])
            # the top-k over all context frames is the top-k of each frame's top-k: one frame at a time
            # keeps the working set to one window
            best, picked = [], []
            for feats, soft in zip(sources, labels):
                cos = query @ feats[a0:a1, b0:b1].reshape(-1, feats.shape[2]).T
                cos.masked_fill_(~near, float("-inf"))
                value, index = cos.topk(min(topk, cos.shape[1]), dim=1)
                best.append(value)
                picked.append(soft[a0:a1, b0:b1].reshape(-1, soft.shape[2])[index])
            value, index = torch.cat(best, dim=1).topk(topk, dim=1)
            chosen = torch.cat(picked, dim=1).gather(1, index[..., None].expand(-1, -1, out.shape[2]))
            # exp(cos / t) normalised over the kept sources (softmax: same values, no overflow)
            weights = torch.softmax(value / temperature, dim=1)
            out[i0:i1, j0:j1] = torch.einsum("tk,tkl->tl", weights, chosen).view(i1 - i0, j1 - j0, -1)
    return out


def one_hot_labels(label_map: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(h, w) integer channel indices to (h, w, num_labels) float one-hot."""
    return F.one_hot(label_map.long(), num_labels).float()


class LabelPropagator:
    """Streams frames through the protocol: keeps the first frame and the last ``context`` frames.

    Feed it dense feature maps (C, h, w) in order; :meth:`step` returns the new frame's soft labels
    (L, h, w) at token resolution.
    """

    def __init__(self, first_features: torch.Tensor, first_labels: torch.Tensor,
                 config: PropagationConfig = PropagationConfig()):
        """``first_labels``: (L, h, w) soft (typically one-hot) labels of the first frame."""
        if first_labels.dim() != 3 or first_labels.shape[1:] != first_features.shape[1:]:
            raise ValueError(f"first-frame labels {tuple(first_labels.shape)} do not match the feature grid "
                             f"{tuple(first_features.shape[1:])}")
        self.config = config
        self.first = (self._prepare(first_features), first_labels.permute(1, 2, 0).float().contiguous())
        self.recent: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=config.context)

    @staticmethod
    def _prepare(features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"features must be (C, h, w), got shape {tuple(features.shape)}")
        return F.normalize(features.float(), dim=0).permute(1, 2, 0).contiguous()

    def remember(self, features: torch.Tensor, soft_labels: torch.Tensor) -> None:
        """Push a frame with known soft labels (L, h, w) into the context (used to resume a run)."""
        self.recent.append((self._prepare(features), soft_labels.permute(1, 2, 0).float().contiguous()))

    def step(self, features: torch.Tensor) -> torch.Tensor:
        target = self._prepare(features)
        if target.shape != self.first[0].shape:
            raise ValueError(f"frame features {tuple(features.shape)} differ from the first frame's "
                             f"{tuple(self.first[0].permute(2, 0, 1).shape)}")
        context = [self.first, *self.recent]
        c = self.config
        soft = propagate_labels(target, [f for f, _ in context], [s for _, s in context],
                                radius=c.radius, topk=c.topk, temperature=c.temperature)
        self.recent.append((target, soft))
        return soft.permute(2, 0, 1)


def labels_at_pixels(soft: torch.Tensor, patch_size: int, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) channel indices from token soft labels (L, h, w), as the DAVIS scripts do it.

    Bilinear upsampling by the patch size, each channel min-max normalised (where it is not all
    zero), argmax; then nearest-neighbour resizing (pixel centres, as PIL) to ``size`` = (H, W), the
    original frame size.
    """
    up = F.interpolate(soft[None].float(), scale_factor=patch_size, mode="bilinear", align_corners=False)[0]
    low = up.amin(dim=(1, 2), keepdim=True)
    high = up.amax(dim=(1, 2), keepdim=True)
    normed = torch.where(high > 0, (up - low) / (high - low).clamp_min(torch.finfo(up.dtype).tiny), up)
    labels = normed.argmax(dim=0)
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
