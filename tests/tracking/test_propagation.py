"""Label propagation: equal to the classic dense formulation, bounded memory, the streaming context."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pe_dense.tracking import LabelPropagator, PropagationConfig, labels_at_pixels, propagate_labels
from pe_dense.tracking.dense_reference import neighbourhood_mask, propagate_labels_dense
from pe_dense.tracking.propagation import (
    ScreenedMap,
    propagate_labels_exact,
    propagate_labels_screened,
    screening_available,
    screening_step,
)

screened = pytest.mark.suite("int8_screening")


def random_case(h, w, n, channels=16, labels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = F.normalize(torch.randn(h, w, channels, generator=g), dim=2)
    sources = [F.normalize(torch.randn(h, w, channels, generator=g), dim=2) for _ in range(n)]
    soft = [torch.rand(h, w, labels, generator=g) for _ in range(n)]
    return target, sources, soft


@pytest.mark.parametrize("h, w, n, radius, topk, tile", [
    (30, 53, 8, 12, 5, 10),  # the 480p grid of a patch-16 model, the published settings
    (7, 5, 3, 2, 5, 10),  # tile larger than the frame
    (19, 23, 2, 3, 4, 4),  # tiles cut at the borders
    (9, 11, 2, 0, 3, 10),  # no neighbourhood restriction
    (16, 16, 1, 4, 1, 5),  # a single source, top-1
])
def test_equals_dense_formulation(h, w, n, radius, topk, tile):
    target, sources, soft = random_case(h, w, n)
    dense = propagate_labels_dense(target, sources, soft, radius=radius, topk=topk)
    exact = propagate_labels_exact(target, sources, soft, radius=radius, topk=topk, tile=tile)
    ours = propagate_labels(target, sources, soft, radius=radius, topk=topk)  # screened where the kernel is built
    decided = decided_tokens(target, sources, radius, topk)
    assert decided.float().mean() > 0.99  # near ties are rare: the comparison covers almost every token
    for out in (exact, ours):
        torch.testing.assert_close(out[decided], dense[decided], atol=1e-6, rtol=1e-5)
        assert torch.equal(out.argmax(-1)[decided], dense.argmax(-1)[decided])


def decided_tokens(target, sources, radius, topk, margin=1e-5):
    """(h, w) bool: the target tokens whose k-th best source leads the next one by more than float32 rounding
    (similarities in float64). Elsewhere the top k, and so the labels, depend on the order in which a CPU's
    vector units sum, and differ between CPUs for any two implementations."""
    h, w, c = target.shape
    cos = torch.stack([target.double().reshape(-1, c) @ s.double().reshape(-1, c).T for s in sources], 1)
    if radius > 0:
        cos = cos.masked_fill(neighbourhood_mask(h, w, radius)[:, None] == 0, -torch.inf)
    best = cos.reshape(h * w, -1).topk(topk + 1, dim=1).values
    return (best[:, topk - 1] - best[:, topk] > margin).reshape(h, w)


def test_screening_error_is_within_the_bound():
    """|cos - step^2 * code product| <= r_t + (1 + r_t) r_s, also where codes clamp at +-127."""
    target, sources, _ = random_case(9, 11, 2, channels=64)
    for step in (screening_step(target), screening_step(target) / 4):  # the second one clamps
        t, s = ScreenedMap.quantize(target, step, 3), ScreenedMap.quantize(sources[0], step, 3)
        codes = [(m.features / step).round().clamp(-127, 127).reshape(-1, 64) for m in (t, s)]
        error = (target.reshape(-1, 64) @ sources[0].reshape(-1, 64).T - step**2 * codes[0] @ codes[1].T).abs()
        bound = t.residual + (1 + t.residual) * s.residual
        assert 0 < error.max() <= bound


@screened
@pytest.mark.parametrize("scale", [1.0, 40.0, 0.02])
def test_screened_equals_exact_whatever_the_quantisation(scale):
    """A step 40x too coarse (codes mostly 0: screening rules nothing out) or 50x too fine (codes clamp,
    large residuals): the bound widens the candidate set and the result stays the exact one."""
    target, sources, soft = random_case(19, 23, 3, channels=32, seed=1)
    step = max(screening_step(m) for m in (target, *sources)) * scale
    screened = propagate_labels_screened(ScreenedMap.quantize(target, step, 4),
                                         [ScreenedMap.quantize(s, step, 4) for s in sources], soft, radius=4, topk=5)
    exact = propagate_labels_exact(target, sources, soft, radius=4, topk=5)
    torch.testing.assert_close(screened, exact, atol=1e-6, rtol=1e-5)


@screened
def test_screened_kernel_refuses_inconsistent_inputs():
    target, sources, soft = random_case(8, 8, 2)
    step = screening_step(target)
    maps = [ScreenedMap.quantize(m, step, 2) for m in (target, *sources)]
    with pytest.raises(ValueError, match="quantised with one step for radius 3"):
        propagate_labels_screened(maps[0], maps[1:], soft, radius=3)
    other = ScreenedMap.quantize(sources[0], step * 2, 2)
    with pytest.raises(ValueError, match="one step"):
        propagate_labels_screened(maps[0], [other, maps[2]], soft, radius=2)
    screen = torch.zeros(2, 64, 64, dtype=torch.int32)
    query = target.reshape(64, 16)
    args = (sources, [0, 0, 8, 8], [0, 0, 8, 8], 2, 3, 10)
    torch.ops.pe_dense.screened_topk(screen, query, *args)  # consistent: runs
    with pytest.raises(RuntimeError, match="screen must be"):
        torch.ops.pe_dense.screened_topk(screen[:, :32], query, *args)
    with pytest.raises(RuntimeError, match="window must lie in the frame"):
        torch.ops.pe_dense.screened_topk(screen, query, sources, [0, 0, 8, 8], [1, 0, 8, 8], 2, 3, 10)
    with pytest.raises(RuntimeError, match="topk exceeds"):
        torch.ops.pe_dense.screened_topk(screen, query, sources, [0, 0, 8, 8], [0, 0, 8, 8], 0, 3, 10)


def test_neighbourhood_restriction_is_respected():
    """A target token can only take labels from sources within the radius (Chebyshev distance)."""
    h, w, radius = 12, 12, 2
    target, sources, _ = random_case(h, w, 1)
    for y, x in [(0, 0), (5, 7), (11, 3)]:
        onehot = torch.zeros(h, w, h * w)
        onehot.view(h * w, h * w)[torch.arange(h * w), torch.arange(h * w)] = 1  # label = source index
        out = propagate_labels(target, sources, [onehot], radius=radius, topk=5)
        used = torch.nonzero(out[y, x]).flatten()
        assert len(used) == 5
        assert ((used // w - y).abs() <= radius).all() and ((used % w - x).abs() <= radius).all()


def test_large_grid_never_builds_quadratic_tensors():
    """400x400 tokens: a dense (HW)^2 affinity would be 100 GB; tiles need a few MB. Spot-check
    tokens against a direct computation over their neighbourhood."""
    target, sources, soft = random_case(400, 400, 1, channels=4, labels=2)
    radius, topk = 2, 3
    out = propagate_labels(target, sources, soft, radius=radius, topk=topk)
    for y, x in [(0, 0), (123, 321), (399, 17), (250, 399)]:
        ys = slice(max(y - radius, 0), y + radius + 1)
        xs = slice(max(x - radius, 0), x + radius + 1)
        cos = (sources[0][ys, xs] @ target[y, x]).flatten()
        best, index = cos.topk(topk)
        expected = torch.softmax(best / 0.1, 0) @ soft[0][ys, xs].reshape(-1, 2)[index]
        torch.testing.assert_close(out[y, x], expected)


def test_soft_labels_are_convex_combinations():
    target, sources, _ = random_case(10, 12, 3)
    onehot = [F.one_hot(torch.randint(0, 4, (10, 12)), 4).float() for _ in range(3)]
    out = propagate_labels(target, sources, onehot, radius=3)
    torch.testing.assert_close(out.sum(-1), torch.ones(10, 12))
    assert (out >= 0).all()


def test_propagator_keeps_first_frame_and_last_context_frames():
    torch.manual_seed(0)
    first = torch.randn(8, 6, 7)
    labels = F.one_hot(torch.randint(0, 3, (6, 7)), 3).permute(2, 0, 1).float()
    propagator = LabelPropagator(first, labels, PropagationConfig(context=2, radius=3))
    # a frame identical to the first gets the first frame's labels back
    out = propagator.step(first.clone())
    assert torch.equal(out.argmax(0), labels.argmax(0))
    for _ in range(5):
        propagator.step(torch.randn(8, 6, 7))
    assert len(propagator.recent) == 2


def test_propagator_streams_the_exact_labels():
    """Streamed through the context (screened once per frame on the CPU), equal to the exact path run
    on the same context."""
    torch.manual_seed(0)
    frames = [torch.randn(16, 14, 15) for _ in range(6)]
    labels = F.one_hot(torch.randint(0, 3, (14, 15)), 3).permute(2, 0, 1).float()
    config = PropagationConfig(context=3, radius=4)
    propagator = LabelPropagator(frames[0], labels, config)
    assert (propagator.step_size is not None) == screening_available(frames[0])
    context = [(F.normalize(frames[0], dim=0).permute(1, 2, 0), labels.permute(1, 2, 0))]
    for frame in frames[1:]:
        target = F.normalize(frame, dim=0).permute(1, 2, 0)
        expected = propagate_labels_exact(target, [f for f, _ in context[:1] + context[1:][-3:]],
                                          [s for _, s in context[:1] + context[1:][-3:]], radius=4, topk=5)
        out = propagator.step(frame)
        torch.testing.assert_close(out.permute(1, 2, 0), expected, atol=1e-6, rtol=1e-5)
        context.append((target, expected))


def test_bad_inputs():
    target, sources, soft = random_case(6, 6, 2)
    with pytest.raises(ValueError, match="one label map per source"):
        propagate_labels(target, sources, soft[:1])
    with pytest.raises(ValueError, match="differ from target"):
        propagate_labels(target, [sources[0][:5], sources[1]], soft)
    with pytest.raises(ValueError, match="topk"):
        propagate_labels(target, sources, soft, radius=1, topk=9)
    with pytest.raises(ValueError, match="invalid propagation settings"):
        PropagationConfig(temperature=0)
    propagator = LabelPropagator(torch.randn(4, 6, 6), torch.ones(2, 6, 6))
    with pytest.raises(ValueError, match="differ from the first frame"):
        propagator.step(torch.randn(4, 6, 7))
    with pytest.raises(ValueError, match="do not match the feature grid"):
        LabelPropagator(torch.randn(4, 6, 6), torch.ones(2, 5, 6))


def test_labels_at_pixels_upsamples_normalises_and_resizes():
    soft = torch.zeros(3, 2, 3)
    soft[0] = 0.5  # background...
    soft[0, 0, 0], soft[1, 0, 0] = 0.4, 0.9  # ...except object 1 in the top-left token
    # a faint channel is stretched to [0, 1] by the per-channel min-max normalisation, so object 2
    # wins its bottom-right token although its raw score is far below the background's
    soft[2] = 0.01
    soft[0, 1, 2], soft[2, 1, 2] = 0.45, 0.02
    labels = labels_at_pixels(soft, patch_size=4, size=(8, 12))
    assert labels.shape == (8, 12)
    assert labels[0, 0] == 1 and labels[7, 11] == 2
    assert labels[0, 11] == 0
    resized = labels_at_pixels(soft, patch_size=4, size=(16, 24))
    assert np.array_equal(resized[::2, ::2].numpy(), labels.numpy())
    tied = torch.zeros(3, 2, 3)
    tied[1:, 0, 0] = 1.0  # channels 1 and 2 tie at their maximum: the first one wins, as argmax
    assert labels_at_pixels(tied, patch_size=4, size=(8, 12))[0, 0] == 1
