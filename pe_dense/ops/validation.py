"""Checks of multi-scale deformable attention inputs, run before any kernel: a bad input gets a
ValueError that names the problem, never a crash or silent garbage from inside a kernel."""

from __future__ import annotations

from typing import Sequence, Union

import torch

ShapesLike = Union[torch.Tensor, Sequence[Sequence[int]]]


def as_level_tensors(spatial_shapes: ShapesLike, level_start_index) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, 2) and (L,) int64 tensors; a list of (H, W) pairs and a missing start index are filled in."""
    if not isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.int64)
    if spatial_shapes.is_floating_point() or spatial_shapes.is_complex():
        raise ValueError(f"spatial_shapes must be an integer tensor, got {spatial_shapes.dtype}")
    if spatial_shapes.ndim != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must have shape (L, 2) of (H, W), got {tuple(spatial_shapes.shape)}")
    if level_start_index is None:
        sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    if not isinstance(level_start_index, torch.Tensor):
        level_start_index = torch.as_tensor(level_start_index, dtype=torch.int64)
    if level_start_index.is_floating_point() or level_start_index.is_complex():
        raise ValueError(f"level_start_index must be an integer tensor, got {level_start_index.dtype}")
    return spatial_shapes.long(), level_start_index.long()


def check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    """Raise ValueError unless the five inputs describe one consistent multi-scale attention.

    Level sizes are checked against ``value`` when spatial_shapes and level_start_index are on the
    CPU (reading them from a GPU would stall it); the kernels guard their memory accesses anyway.
    """
    tensors = {"value": value, "sampling_locations": sampling_locations, "attention_weights": attention_weights}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got {t.dtype}")
    if value.ndim != 4:
        raise ValueError(f"value must have shape (N, S, heads, channels), got {tuple(value.shape)}")
    if sampling_locations.ndim != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError("sampling_locations must have shape (N, queries, heads, levels, points, 2), got "
                         f"{tuple(sampling_locations.shape)}")
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(f"attention_weights must have shape {tuple(sampling_locations.shape[:-1])} (the sampling "
                         f"locations without the last axis), got {tuple(attention_weights.shape)}")
    n, s, heads, channels = value.shape
    ln, _, lheads, levels, points, _ = sampling_locations.shape
    if ln != n:
        raise ValueError(f"batch sizes differ: value has {n}, sampling_locations {ln}")
    if lheads != heads:
        raise ValueError(f"head counts differ: value has {heads}, sampling_locations {lheads}")
    for name, size in (("batch", n), ("value length", s), ("heads", heads), ("channels", channels),
                       ("levels", levels), ("points", points)):
        if size == 0:
            raise ValueError(f"empty input: {name} is 0")
    if spatial_shapes.shape[0] != levels:
        raise ValueError(f"spatial_shapes has {spatial_shapes.shape[0]} levels, sampling_locations {levels}")
    if level_start_index.ndim != 1 or level_start_index.shape[0] != levels:
        raise ValueError(f"level_start_index must have shape ({levels},), got {tuple(level_start_index.shape)}")
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(f"value, sampling_locations and attention_weights are on different devices: {devices}")
    if len({t.dtype for t in tensors.values()}) > 1 and not torch.is_autocast_enabled(value.device.type):
        raise ValueError("value, sampling_locations and attention_weights must share a dtype, got "
                         f"{value.dtype}, {sampling_locations.dtype}, {attention_weights.dtype}")
    if spatial_shapes.device.type == "cpu" and level_start_index.device.type == "cpu":
        _check_levels(spatial_shapes, level_start_index, s)


def _check_levels(spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, length: int) -> None:
    if (spatial_shapes <= 0).any():
        raise ValueError(f"spatial_shapes must be positive, got {spatial_shapes.tolist()}")
    sizes = spatial_shapes.prod(1)
    if int(sizes.sum()) != length:
        raise ValueError(f"spatial_shapes {spatial_shapes.tolist()} cover {int(sizes.sum())} positions but value has "
                         f"{length}")
    expected = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    if not torch.equal(level_start_index.cpu(), expected):
        raise ValueError(f"level_start_index {level_start_index.tolist()} does not match spatial_shapes "
                         f"(expected {expected.tolist()})")
