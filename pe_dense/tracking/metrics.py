"""DAVIS region (J) and boundary (F) measures, as the official davis2017-evaluation computes them.

J is the Jaccard index of an object's predicted and true masks (1 when both are empty). F is the
F-measure of boundary precision and recall: boundary pixels (seg2bmap) match when the other mask's
boundary lies within a disk of radius ceil(0.008 * image diagonal). Semi-supervised evaluation
scores every frame but the first (given) and the last, per object, and averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from skimage.morphology import disk

BOUNDARY_THRESHOLD = 0.008  # of the image diagonal


def region_jaccard(truth: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None) -> float:
    """J of two binary masks (H, W); pixels in ``void`` are ignored."""
    if truth.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {truth.shape} vs {pred.shape}")
    truth, pred = truth.astype(bool), pred.astype(bool)
    keep = ~void.astype(bool) if void is not None else np.ones_like(truth)
    union = np.count_nonzero((truth | pred) & keep)
    return 1.0 if union == 0 else np.count_nonzero(truth & pred & keep) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask, offset half a pixel towards the origin (seg2bmap)."""
    seg = mask.astype(bool)
    east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    boundary[-1, :] = seg[-1, :] ^ east[-1, :]
    boundary[:, -1] = seg[:, -1] ^ south[:, -1]
    boundary[-1, -1] = False
    return boundary


def boundary_f(truth: np.ndarray, pred: np.ndarray, void: Optional[np.ndarray] = None,
               threshold: float = BOUNDARY_THRESHOLD) -> float:
    """F of two binary masks (H, W); ``threshold`` < 1 is a fraction of the diagonal, else pixels."""
    if truth.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {truth.shape} vs {pred.shape}")
    keep = ~void.astype(bool) if void is not None else np.ones(truth.shape, dtype=bool)
    radius = threshold if threshold >= 1 else math.ceil(threshold * np.linalg.norm(truth.shape))
    pred_edges = boundary_map(pred.astype(bool) & keep)
    true_edges = boundary_map(truth.astype(bool) & keep)
    kernel = disk(radius).astype(np.uint8)
    pred_near = cv2.dilate(pred_edges.astype(np.uint8), kernel).astype(bool)
    true_near = cv2.dilate(true_edges.astype(np.uint8), kernel).astype(bool)
    n_pred, n_true = np.count_nonzero(pred_edges), np.count_nonzero(true_edges)
    if n_pred == 0 or n_true == 0:  # DAVIS: both empty is perfect, one empty scores 0
        return 1.0 if n_pred == n_true else 0.0
    precision = np.count_nonzero(pred_edges & true_near) / n_pred
    recall = np.count_nonzero(true_edges & pred_near) / n_true
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Statistics:
    """DAVIS per-object statistics over frames: mean, recall (fraction > 0.5) and decay."""

    mean: float
    recall: float
    decay: float

    @classmethod
    def of(cls, values: np.ndarray) -> "Statistics":
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return cls(float("nan"), float("nan"), float("nan"))
        # decay: first quarter minus last quarter, with the official bin edges
        edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
        bins = [values[edges[i]:edges[i + 1] + 1] for i in range(4)]
        return cls(float(values.mean()), float((values > 0.5).mean()), float(bins[0].mean() - bins[3].mean()))


def score_sequence(truth: np.ndarray, pred: np.ndarray, void_label: int = 255) -> dict[int, tuple[np.ndarray,
                                                                                                  np.ndarray]]:
    """Per object id 1..max id of the first true frame: (J per frame, F per frame) over frames 1..T-2.

    ``truth`` and ``pred`` are (T, H, W) label maps; pixels labelled ``void_label`` in the truth are
    ignored (set to background), as DAVIS does for semi-supervised scoring.
    """
    if truth.shape != pred.shape:
        raise ValueError(f"prediction {pred.shape} and annotation {truth.shape} differ in shape")
    if truth.shape[0] < 3:
        raise ValueError(f"a sequence needs at least 3 frames to score (first and last are excluded), "
                         f"got {truth.shape[0]}")
    truth = np.where(truth == void_label, 0, truth)
    objects = range(1, int(truth[0].max()) + 1)
    scores = {}
    for obj in objects:
        j = np.array([region_jaccard(truth[t] == obj, pred[t] == obj) for t in range(1, len(truth) - 1)])
        f = np.array([boundary_f(truth[t] == obj, pred[t] == obj) for t in range(1, len(truth) - 1)])
        scores[obj] = (j, f)
    return scores
