"""DAVIS J and F on hand-made masks, checked against known values and a brute-force boundary match."""

import math

import numpy as np
import pytest
from PIL import Image

from pe_dense.tracking import Statistics, boundary_f, read_label_png, region_jaccard, score_sequence
from pe_dense.tracking.metrics import boundary_map


def square(shape=(60, 80), top=10, left=20, size=25):
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + size, left:left + size] = True
    return mask


def brute_force_f(truth, pred, radius):
    """F from explicit distances between boundary pixels (what the dilation computes)."""
    t_pts, p_pts = np.argwhere(boundary_map(truth)), np.argwhere(boundary_map(pred))
    dist = np.sqrt(((p_pts[:, None, :] - t_pts[None, :, :]) ** 2).sum(-1))
    precision = (dist.min(axis=1) <= radius).mean()
    recall = (dist.min(axis=0) <= radius).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_identical_disjoint_and_empty_masks():
    a = square()
    assert region_jaccard(a, a) == 1.0 and boundary_f(a, a) == 1.0
    b = square(top=40, left=50, size=15)
    assert region_jaccard(a, b) == 0.0 and boundary_f(a, b) == 0.0
    empty = np.zeros_like(a)
    assert region_jaccard(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0  # DAVIS convention
    assert region_jaccard(a, empty) == 0.0 and boundary_f(a, empty) == 0.0
    assert boundary_f(empty, a) == 0.0


def test_known_jaccard_value():
    a, b = square(size=20), square(left=30, size=20)  # overlap 20x10
    assert region_jaccard(a, b) == pytest.approx(200 / 600)


def test_one_pixel_shift_is_within_boundary_tolerance():
    a, b = square(), square(left=21)
    assert region_jaccard(a, b) < 1
    assert boundary_f(a, b) == 1.0
    # the tolerance is ceil(0.008 * diagonal) = 1 pixel here: a 3-pixel shift is not within it
    assert math.ceil(0.008 * np.hypot(60, 80)) == 1
    assert boundary_f(a, square(left=23)) < 0.6  # the two vertical sides no longer match


@pytest.mark.parametrize("seed", range(4))
def test_boundary_f_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:90, :120]
    blobs = [((yy - rng.uniform(20, 70)) ** 2 + (xx - rng.uniform(20, 100)) ** 2) < rng.uniform(100, 600)
             for _ in range(2)]
    radius = math.ceil(0.008 * np.hypot(90, 120))
    assert boundary_f(blobs[0], blobs[1]) == pytest.approx(brute_force_f(blobs[0], blobs[1], radius))
    assert boundary_f(blobs[0], blobs[1], threshold=4) == pytest.approx(brute_force_f(blobs[0], blobs[1], 4))


def test_boundary_map_is_seg2bmap():
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True
    expected = np.array([
        [0, 1, 1, 1, 1, 0],
        [0, 1, 0, 0, 1, 0],
        [0, 1, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0]], dtype=bool)
    # seg2bmap marks pixels whose east/south/south-east neighbour differs: the boundary sits half a
    # pixel towards the origin (column 1 is outside the mask, row 2 inside)
    assert np.array_equal(boundary_map(mask), expected)


def test_void_pixels_are_ignored():
    a, b = square(), square()
    b[10:35, 20:30] = False
    void = np.zeros_like(a)
    void[10:35, 20:30] = True
    assert region_jaccard(a, b) < 1 and region_jaccard(a, b, void) == 1.0


def test_statistics_mean_recall_decay():
    values = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    stats = Statistics.of(values)
    assert stats.mean == pytest.approx(0.65)
    assert stats.recall == pytest.approx(5 / 8)
    # official bins over 8 frames: edges round(linspace(1, 8, 5)) - 1 = 0, 2, 3, 5, 7 (4.5 rounds to
    # even); the first bin is [0:3], the last [5:8]
    assert stats.decay == pytest.approx(np.mean(values[0:3]) - np.mean(values[5:8]))


def test_score_sequence_objects_frames_and_void():
    truth = np.zeros((5, 40, 40), dtype=np.uint8)
    truth[:, 5:15, 5:15] = 1
    truth[:, 20:30, 20:30] = 2
    truth[:, 0, 0] = 255  # void counts as background
    pred = truth.copy()
    pred[pred == 255] = 0
    pred[2, 20:30, 20:30] = 0  # object 2 lost in frame 2
    pred[4] = 0  # the last frame is not scored
    scores = score_sequence(truth, pred)
    assert sorted(scores) == [1, 2]
    j1, f1 = scores[1]
    assert len(j1) == 3 and (j1 == 1).all() and (f1 == 1).all()
    j2, _ = scores[2]
    assert list(j2) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="differ in shape"):
        score_sequence(truth, pred[:, :30])


def test_scores_do_not_depend_on_palette_colours(tmp_path):
    labels = np.zeros((30, 30), dtype=np.uint8)
    labels[5:20, 5:20], labels[18:28, 18:28] = 1, 2
    paths = []
    for i, palette in enumerate([[0, 0, 0, 128, 0, 0, 0, 128, 0], [9, 9, 9, 0, 255, 255, 255, 0, 255]]):
        image = Image.fromarray(labels, mode="P")
        image.putpalette(palette)
        image.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    a, b = (read_label_png(p) for p in paths)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[1], b[1])
    truth = np.stack([labels] * 3)
    assert score_sequence(truth, np.stack([a[0]] * 3)).keys() == score_sequence(truth, np.stack([b[0]] * 3)).keys()
