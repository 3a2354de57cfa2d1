"""Slow tier: on the machine that runs it, the propagation path the CPU's units choose (pe_dense.cpu) is
not slower than the float32 tiles. The dispatch rule is a static one; this is where a CPU it gets wrong
would show (int8 products that are exact but not fast, say)."""

import dataclasses
import time

import pytest
import torch
import torch.nn.functional as F

from pe_dense import cpu
from pe_dense.tracking import LabelPropagator, PropagationConfig

pytestmark = pytest.mark.slow


def _frames(count, h=30, w=53, channels=384):
    """Smooth random features on the 30x53 grid of a 480p frame (patch 16, S width), as a video's are."""
    g = torch.Generator().manual_seed(0)
    base = F.interpolate(torch.randn(1, channels, h // 4 + 1, w // 4 + 1, generator=g), size=(h, w),
                         mode="bilinear")[0]
    return [base + 0.3 * torch.randn(channels, h, w, generator=g) for _ in range(count)]


def test_the_chosen_propagation_is_not_slower_than_the_float32_tiles():
    frames = _frames(16)
    labels = F.one_hot(torch.randint(0, 4, (30, 53), generator=torch.Generator().manual_seed(1)), 4)
    labels = labels.permute(2, 0, 1).float()
    chosen = LabelPropagator(frames[0], labels, PropagationConfig())
    with cpu.assuming(dataclasses.replace(cpu.units(), int8_dot=False)):
        tiles = LabelPropagator(frames[0], labels, PropagationConfig())
    assert tiles.step_size is None
    seconds = {"chosen": [], "tiles": []}
    for frame in frames[1:]:  # the context fills over the first 7 frames; the ways take turns
        for name, propagator in (("chosen", chosen), ("tiles", tiles)):
            start = time.perf_counter()
            soft = propagator.step(frame)
            seconds[name].append(time.perf_counter() - start)
        assert soft.shape == (4, 30, 53)
    chosen_time, tiles_time = min(seconds["chosen"][8:]), min(seconds["tiles"][8:])
    # Where the units choose the tiles, both ways are one path: the margin covers the machine's noise.
    assert chosen_time <= 1.25 * tiles_time, (
        f"{cpu.units().record()}: the chosen path took {chosen_time * 1e3:.0f} ms a step, the float32 tiles "
        f"{tiles_time * 1e3:.0f} ms")
