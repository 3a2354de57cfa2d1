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

On a CPU with native int8 dot products (:func:`pe_dense.cpu.int8_screening`) and pe_dense's compiled
kernels, most of the cosine products are replaced by int8 screening with a proven error bound; the kept
sources and their weights are still the exact float32 ones (docs/protocols.md#fast-label-propagation).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import cpu
from ..ops import kernels_available


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


def _reach(radius: int, h: int, w: int) -> int:
    """The neighbourhood radius in tokens: ``radius=0`` (no restriction) reaches the whole frame."""
    return radius if radius > 0 else max(h, w)


def corner_view(h: int, w: int, radius: int) -> int:
    """How many tokens of one (h, w) source a corner token sees within ``radius`` (0: the whole frame):
    the fewest of any token, so the most ``topk`` can be with a single source."""
    radius = _reach(radius, h, w)
    return min(radius + 1, h) * min(radius + 1, w)


SCREEN_TILE = 8  # target tiles of the screened path: 8x8 tokens waste little of a 25x25 neighbourhood


@dataclass(frozen=True)
class ScreenedMap:
    """A normalised (h, w, C) feature map with its int8 screening codes for one neighbourhood radius.

    The codes are round(features / step), clamped to +-127; ``residual`` is the largest per-token norm of
    ``features - step * codes``, which bounds the screening error (docs/protocols.md#fast-label-propagation).
    ``bands[b]`` holds the codes of the columns that targets in the b-th column of tiles can see, so the
    rows of any tile's neighbourhood are one contiguous block.
    """

    features: torch.Tensor
    step: float
    residual: float
    radius: int
    bands: tuple[torch.Tensor, ...]

    @classmethod
    def quantize(cls, features: torch.Tensor, step: float, radius: int) -> "ScreenedMap":
        h, w, _ = features.shape
        codes = (features / step).round_().clamp_(-127, 127)
        residual = float(torch.linalg.vector_norm(features - step * codes, dim=-1).max())
        codes = codes.to(torch.int8)
        r = _reach(radius, h, w)
        bands = tuple(codes[:, max(j - r, 0):min(j + SCREEN_TILE + r, w)].contiguous()
                      for j in range(0, w, SCREEN_TILE))
        return cls(features, step, residual, radius, bands)


def screening_step(features: torch.Tensor) -> float:
    """The int8 quantisation step that represents ``features``' largest magnitude exactly at 127."""
    return max(float(features.abs().max()), torch.finfo(torch.float32).tiny) / 127


def screening_available(features: torch.Tensor) -> bool:
    """Whether the int8 screening path runs for features on this device: the CPU, with pe_dense's kernels
    built and units that make int8 products fast and exact (:func:`pe_dense.cpu.int8_screening`); the
    float32 tiles elsewhere."""
    return features.device.type == "cpu" and kernels_available("cpu") and cpu.int8_screening(cpu.units())


def _tiles(h: int, w: int, radius: int, tile: int):
    """(target rows, target columns, source rows, source columns) slices: square tiles of targets and the
    bounding box of their neighbourhoods."""
    for i0 in range(0, h, tile):
        i1 = min(i0 + tile, h)
        for j0 in range(0, w, tile):
            j1 = min(j0 + tile, w)
            yield (slice(i0, i1), slice(j0, j1),
                   slice(max(i0 - radius, 0), min(i1 + radius, h)), slice(max(j0 - radius, 0), min(j1 + radius, w)))


def propagate_labels(
    target: torch.Tensor,
    sources: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    *,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Soft labels (h, w, L) of ``target`` from ``sources`` and their ``labels``.

    ``target`` and each source are L2-normalised (h, w, C) feature maps; ``labels`` are (h, w, L) soft
    labels. ``radius=0`` lets every source token compete (no neighbourhood restriction).
    """
    _check_maps(target, sources, labels)
    if not screening_available(target):
        return propagate_labels_exact(target, sources, labels, radius=radius, topk=topk, temperature=temperature)
    step = max(screening_step(m) for m in (target, *sources))
    return propagate_labels_screened(ScreenedMap.quantize(target, step, radius),
                                     [ScreenedMap.quantize(s, step, radius) for s in sources], labels,
                                     radius=radius, topk=topk, temperature=temperature)


def _check_topk(h: int, w: int, radius: int, topk: int, frames: int) -> None:
    if topk > frames * corner_view(h, w, radius):
        raise ValueError(f"topk={topk} exceeds the sources some tokens can see")


def propagate_labels_screened(
    target: ScreenedMap,
    sources: Sequence[ScreenedMap],
    labels: Sequence[torch.Tensor],
    *,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
) -> torch.Tensor:
    """:func:`propagate_labels` on the CPU: int8 screening scores for every neighbour, exact float32
    rescoring of those the error bound cannot rule out (pe_dense._C's ``screened_topk``)."""
    if not screening_available(target.features):  # also loads pe_dense._C
        raise RuntimeError("screened propagation needs CPU tensors, pe_dense._C (pip install --no-build-isolation "
                           "-e .) and a CPU with native, exact int8 products (VNNI or AMX-INT8); "
                           "propagate_labels_exact runs anywhere")
    _check_maps(target.features, [s.features for s in sources], labels)
    if any(m.step != target.step or m.radius != radius for m in (target, *sources)):
        raise ValueError(f"the target and the sources must be quantised with one step for radius {radius}")
    h, w, channels = target.features.shape
    _check_topk(h, w, radius, topk, len(sources))
    radius = _reach(radius, h, w)
    # |exact - step^2 * code product| <= r_t + (1 + r_t) r_s for unit vectors (Cauchy-Schwarz), plus a
    # margin for float32 rounding in the norms and the exact products; a source can be in the exact top-k
    # only if its screening score is within twice that of the k-th best screening score.
    r_s = max(s.residual for s in sources)
    bound = target.residual + (1 + target.residual) * r_s + channels * 2.0**-22
    slack = math.ceil(2 * bound / target.step**2)
    source_features = [s.features for s in sources]
    values = target.features.new_empty(h, w, topk)
    index = torch.empty(h, w, topk, dtype=torch.long)
    for rows, cols, near_rows, near_cols in _tiles(h, w, radius, SCREEN_TILE):
        band = cols.start // SCREEN_TILE  # the band's columns are near_cols
        tile = (rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start)
        window = (near_rows.start, near_cols.start, near_rows.stop - near_rows.start, near_cols.stop - near_cols.start)
        codes = target.bands[band][rows, cols.start - near_cols.start:cols.stop - near_cols.start]
        codes = codes.reshape(-1, channels)
        screen = torch.empty(len(sources), len(codes), window[2] * window[3], dtype=torch.int32)
        for f, s in enumerate(sources):
            # torch._int_mm: int8 x int8 -> int32, exact (|sum| <= 127^2 * C < 2^31)
            torch._int_mm(codes, s.bands[band][near_rows].view(-1, channels).T, out=screen[f])
        query = target.features[rows, cols].reshape(-1, channels).contiguous()
        tile_values, tile_index = torch.ops.pe_dense.screened_topk(screen, query, source_features, tile, window,
                                                                   radius, topk, slack)
        values[rows, cols] = tile_values.view(tile[2], tile[3], topk)
        index[rows, cols] = tile_index.view(tile[2], tile[3], topk)
    chosen = torch.cat([s.reshape(-1, s.shape[2]) for s in labels])[index]  # (h, w, topk, L)
    return _weighted_labels(values, chosen, temperature)


def _weighted_labels(values: torch.Tensor, chosen: torch.Tensor, temperature: float) -> torch.Tensor:
    """Average of the kept sources' labels weighted by exp(cos / t) normalised to sum to one (a softmax:
    same values, no overflow)."""
    return torch.einsum("...k,...kl->...l", torch.softmax(values / temperature, dim=-1), chosen)


def propagate_labels_exact(
    target: torch.Tensor,
    sources: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    *,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
    tile: int = 16,
) -> torch.Tensor:
    """:func:`propagate_labels` with every neighbour's cosine computed in float32 (any device)."""
    _check_maps(target, sources, labels)
    h, w, _ = target.shape
    _check_topk(h, w, radius, topk, len(sources))
    radius = _reach(radius, h, w)
    tile = min(tile, h, w) if radius < max(h, w) else max(h, w)  # no restriction: one tile is the frame
    out = target.new_empty(h, w, labels[0].shape[2])
    rows = torch.arange(h, device=target.device)
    cols = torch.arange(w, device=target.device)
    for ti, tj, wi, wj in _tiles(h, w, radius, tile):
        # (tile tokens, window tokens): both coordinates within the radius
        near_y = (rows[ti, None] - rows[None, wi]).abs() <= radius
        near_x = (cols[tj, None] - cols[None, wj]).abs() <= radius
        near = (near_y[:, None, :, None] & near_x[None, :, None, :]).flatten(2).flatten(0, 1)
        query = target[ti, tj].reshape(-1, target.shape[2])
        # the top-k over all context frames is the top-k of each frame's top-k: one frame at a time
        # keeps the working set to one window
        best, picked = [], []
        for feats, soft in zip(sources, labels):
            cos = query @ feats[wi, wj].reshape(-1, feats.shape[2]).T
            cos.masked_fill_(~near, float("-inf"))
            value, index = cos.topk(min(topk, cos.shape[1]), dim=1)
            best.append(value)
            picked.append(soft[wi, wj].reshape(-1, soft.shape[2])[index])
        value, index = torch.cat(best, dim=1).topk(topk, dim=1)
        chosen = torch.cat(picked, dim=1).gather(1, index[..., None].expand(-1, -1, out.shape[2]))
        out[ti, tj] = _weighted_labels(value, chosen, temperature).view(out[ti, tj].shape)
    return out


def one_hot_labels(label_map: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(h, w) integer channel indices to (h, w, num_labels) float one-hot."""
    return F.one_hot(label_map.long(), num_labels).float()


class LabelPropagator:
    """Streams frames through the protocol: keeps the first frame and the last ``context`` frames.

    Feed it dense feature maps (C, h, w) in order; :meth:`step` returns the new frame's soft labels
    (L, h, w) at token resolution. Each frame is normalised (and, on the CPU, quantised for screening
    with the step of the first frame) once, when it enters.
    """

    def __init__(self, first_features: torch.Tensor, first_labels: torch.Tensor,
                 config: PropagationConfig | None = None):
        """``first_labels``: (L, h, w) soft (typically one-hot) labels of the first frame."""
        if first_labels.dim() != 3 or first_labels.shape[1:] != first_features.shape[1:]:
            raise ValueError(f"first-frame labels {tuple(first_labels.shape)} do not match the feature grid "
                             f"{tuple(first_features.shape[1:])}")
        self.config = config or PropagationConfig()
        first = self._normalize(first_features)
        self.shape = first.shape  # (h, w, C)
        self.step_size = screening_step(first) if screening_available(first) else None
        self.first = (self._prepare(first), first_labels.permute(1, 2, 0).float().contiguous())
        self.recent: deque[tuple[torch.Tensor | ScreenedMap, torch.Tensor]] = deque(maxlen=self.config.context)

    @staticmethod
    def _normalize(features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"features must be (C, h, w), got shape {tuple(features.shape)}")
        return F.normalize(features.float(), dim=0).permute(1, 2, 0).contiguous()

    def _prepare(self, features: torch.Tensor) -> torch.Tensor | ScreenedMap:
        return features if self.step_size is None else ScreenedMap.quantize(features, self.step_size,
                                                                              self.config.radius)

    def remember(self, features: torch.Tensor, soft_labels: torch.Tensor) -> None:
        """Push a frame with known soft labels (L, h, w) into the context (used to resume a run)."""
        self.recent.append((self._prepare(self._normalize(features)),
                            soft_labels.permute(1, 2, 0).float().contiguous()))

    def step(self, features: torch.Tensor) -> torch.Tensor:
        target = self._normalize(features)
        if target.shape != self.shape:
            raise ValueError(f"frame features {tuple(features.shape)} differ from the first frame's "
                             f"{(self.shape[2], *self.shape[:2])}")
        target = self._prepare(target)
        context = [self.first, *self.recent]
        propagate = propagate_labels_exact if self.step_size is None else propagate_labels_screened
        c = self.config
        soft = propagate(target, [f for f, _ in context], [s for _, s in context],
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
    # (up - low) / (high - low) in place; all-zero channels subtract 0 and divide by 1, staying exactly as they are
    normalised = high > 0
    spread = (high - low).clamp_min(torch.finfo(up.dtype).tiny)
    up.sub_(torch.where(normalised, low, 0)).div_(torch.where(normalised, spread, 1))
    labels = up.max(dim=0).indices  # argmax (first of ties, like argmax); ~7x faster across dim 0 on the CPU
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
