"""Label propagation: equal to the classic dense formulation, bounded memory, the streaming context."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pe_dense.tracking import LabelPropagator, PropagationConfig, labels_at_pixels, propagate_labels
from pe_dense.tracking.dense_reference import propagate_labels_dense


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
    ours = propagate_labels(target, sources, soft, radius=radius, topk=topk, tile=tile)
    dense = propagate_labels_dense(target, sources, soft, radius=radius, topk=topk)
    torch.testing.assert_close(ours, dense, atol=1e-6, rtol=1e-5)
    assert torch.equal(ours.argmax(-1), dense.argmax(-1))


def test_neighbourhood_restriction_is_respected():
    """A target token can only take labels from sources within the radius (Chebyshev distance)."""
    h, w, radius = 12, 12, 2
    target, sources, _ = random_case(h, w, 1)
    for y, x in [(0, 0), (5, 7), (11, 3)]:
        onehot = torch.zeros(h, w, h * w)
        onehot.view(h * w, h * w)[torch.arange(h * w), torch.arange(h * w)] = 1  # label = source index
        out = propagate_labels(target, sources, [onehot], radius=radius, topk=5, tile=4)
        used = torch.nonzero(out[y, x]).flatten()
        assert len(used) == 5
        assert ((used // w - y).abs() <= radius).all() and ((used % w - x).abs() <= radius).all()


def test_large_grid_never_builds_quadratic_tensors():
    """400x400 tokens: a dense (HW)^2 affinity would be 100 GB; tiles need a few MB. Spot-check
    tokens against a direct computation over their neighbourhood."""
    target, sources, soft = random_case(400, 400, 1, channels=4, labels=2)
    radius, topk = 2, 3
    out = propagate_labels(target, sources, soft, radius=radius, topk=topk, tile=32)
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
