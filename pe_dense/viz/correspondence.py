"""Token correspondences between two feature maps: similarity maps and mutual nearest neighbours."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .pca import Features

Token = tuple[int, int]  # (row, column) in the token grid


def _map(features: Features, name: str) -> torch.Tensor:
    x = torch.as_tensor(features).detach().to("cpu", torch.float32)
    if x.ndim != 3:
        raise ValueError(f"{name} must be a (C, h, w) feature map, got shape {tuple(x.shape)}")
    return x


def token_at(point: tuple[float, float], image_size: tuple[int, int], grid: tuple[int, int]) -> Token:
    """The token under pixel ``point`` = (x, y) of an image of ``image_size`` = (width, height)."""
    (x, y), (width, height), (rows, cols) = point, image_size, grid
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"point ({x}, {y}) is outside the {width}x{height} image")
    return min(int(y * rows / height), rows - 1), min(int(x * cols / width), cols - 1)


def token_center(token: Token, image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[float, float]:
    """The (x, y) pixel position of a token's centre in an image of ``image_size`` = (width, height)."""
    (row, col), (width, height), (rows, cols) = token, image_size, grid
    return (col + 0.5) * width / cols, (row + 0.5) * height / rows


def similarity_map(source: Features, token: Token, target: Features) -> torch.Tensor:
    """Cosine similarity (h2, w2) of ``source``'s token (row, col) to every token of ``target``."""
    source = _map(source, "source")
    row, col = token
    if not (0 <= row < source.shape[1] and 0 <= col < source.shape[2]):
        raise ValueError(f"token {token} is outside the {source.shape[1]}x{source.shape[2]} grid")
    return cosine_map(source[:, row, col], target)


def cosine_map(query: Features, target: Features) -> torch.Tensor:
    """Cosine similarity (h, w) of a (C,) feature vector (a token, or e.g. an object's mean token) to ``target``."""
    query, target = torch.as_tensor(query).detach().to("cpu", torch.float32), _map(target, "target")
    if query.shape != target.shape[:1]:
        raise ValueError(f"query of shape {tuple(query.shape)} does not match {target.shape[0]} target channels")
    return torch.einsum("c,chw->hw", F.normalize(query, dim=0), F.normalize(target, dim=0))


class Matches(NamedTuple):
    """Token pairs sorted by decreasing cosine similarity: ``source[i]`` matches ``target[i]``."""

    source: list[Token]
    target: list[Token]
    similarity: list[float]


def mutual_matches(source: Features, target: Features, max_matches: int = 20, min_distance: int = 2) -> Matches:
    """Click-free correspondences: token pairs that are each other's nearest neighbour.

    The most similar pairs are kept first; a pair closer than ``min_distance`` tokens (Chebyshev)
    to an already kept source token is skipped, so the matches spread over the image.
    """
    a, b = _map(source, "source"), _map(target, "target")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"source has {a.shape[0]} channels, target {b.shape[0]}")
    sim = F.normalize(a.flatten(1), dim=0).T @ F.normalize(b.flatten(1), dim=0)  # (Na, Nb)
    forward, backward = sim.argmax(1), sim.argmax(0)
    mutual = torch.nonzero(backward[forward] == torch.arange(sim.shape[0])).flatten()
    scores = sim[mutual, forward[mutual]]
    order = scores.argsort(descending=True)
    width_a, width_b = a.shape[2], b.shape[2]
    kept = Matches([], [], [])
    for i in order.tolist():
        s = int(mutual[i])
        src = (s // width_a, s % width_a)
        if any(max(abs(src[0] - r), abs(src[1] - c)) < min_distance for r, c in kept.source):
            continue
        t = int(forward[s])
        kept.source.append(src)
        kept.target.append((t // width_b, t % width_b))
        kept.similarity.append(float(scores[i]))
        if len(kept.source) == max_matches:
            break
    return kept
