"""A built-in semantic-segmentation dataset of synthetic scenes, written in the ADE20k file layout.

Each scene has "stuff" regions (sky or a wall above a horizon; floor, grass or water below it,
split by a wavy boundary) and 1-4 "things" in front (circle, square, triangle, star). Like real
object classes, each thing class has typical colours (a band of vivid hues of its own, which only
partly sets it apart: the bands of neighbouring classes touch) as well as its shape. Each class has its
own texture: clouds in the sky, bricks on walls, planks in perspective on floors, blades of grass,
ripples on water. A few grey "clutter" blobs carry label 0, ADE's "other" label, which training and evaluation ignore.

Files follow ADE20k (``ADEChallengeData2016``) so that mmsegmentation's dataset classes read them
and a real ADE20k drops in by path:
``<root>/images/{training,validation}/scene_XXXXXX.jpg`` and
``<root>/annotations/{training,validation}/scene_XXXXXX.png`` (uint8; 0 = other, class k = k + 1).

Generation is deterministic: image ``i`` of a split depends only on the split's seed and ``i``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .drawing import fill_polygon, saturated, shape_outline, smooth_texture
from .generated import ImageFolderDataset, SplitSpec

STUFF = ("sky", "wall", "floor", "grass", "water")
THINGS = ("circle", "square", "triangle", "star")
CLASSES = STUFF + THINGS
PALETTE = ((70, 130, 220), (200, 170, 120), (140, 90, 50), (60, 170, 60), (30, 90, 140),
           (230, 60, 60), (240, 200, 40), (160, 60, 200), (250, 130, 20))
FORMAT_VERSION = 2
IMAGE_SIZE = 160
THING_HUES = {"circle": (0.97, 0.12), "square": (0.12, 0.3), "triangle": (0.3, 0.5), "star": (0.75, 0.97)}


def _label(name: str) -> int:
    """The value a class has in the annotation PNGs (ADE's convention: 0 is "other")."""
    return CLASSES.index(name) + 1


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float32)


def _sky(rng, size):
    y, _ = _grid(size)
    top, bottom = np.array([0.25, 0.45, 0.85]), np.array([0.65, 0.8, 0.95])
    top = np.clip(top + rng.normal(0, 0.05, 3), 0, 1)
    t = (y / size)[..., None]
    clouds = np.clip(smooth_texture(rng, size, size, 6).mean(2, keepdims=True) * 2 - 1.0, 0, 1)
    return (1 - t) * top + t * bottom + clouds * (1 - ((1 - t) * top + t * bottom)) * 0.9


def _wall(rng, size):
    y, x = _grid(size)
    base = np.array([0.75, 0.65, 0.5]) + rng.normal(0, 0.06, 3)
    brick_h = rng.uniform(6, 11)
    row = np.floor(y / brick_h)
    offset = (row % 2) * brick_h
    mortar = (np.mod(y, brick_h) < 1.5) | (np.mod(x + offset, 2.2 * brick_h) < 1.5)
    shade = 0.9 + 0.2 * smooth_texture(rng, size, size, 12).mean(2, keepdims=True)
    return np.where(mortar[..., None], 0.92, 1.0) * base * shade


def _floor(rng, size, horizon):
    y, x = _grid(size)
    depth = 1.0 / np.maximum(y - horizon, 1.0)  # perspective: planks narrow towards the horizon
    plank = np.floor((x - size / 2) * depth * rng.uniform(4, 7))
    tone = 0.85 + 0.3 * ((plank * 0.618) % 1.0)
    base = np.array([0.55, 0.36, 0.2]) + rng.normal(0, 0.04, 3)
    return base * tone[..., None]


def _grass(rng, size):
    noise = rng.random((size, size)).astype(np.float32)
    blades = np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize((size, size // 3)).resize(
        (size, size), Image.NEAREST), dtype=np.float32) / 255  # vertical streaks
    base = np.array([0.25, 0.6, 0.2]) + rng.normal(0, 0.04, 3)
    return base * (0.7 + 0.6 * blades[..., None])


def _water(rng, size):
    y, x = _grid(size)
    ripples = np.sin(y * rng.uniform(0.8, 1.4) + 2 * np.sin(x * 0.08 + rng.uniform(0, 6)))
    base = np.array([0.1, 0.35, 0.55]) + rng.normal(0, 0.04, 3)
    return np.clip(base + 0.12 * ripples[..., None] * np.array([1, 1, 0.6]), 0, 1)


def render_scene(index: int, seed: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of the split with ``seed``: (H, W, 3) uint8 RGB and (H, W) uint8 labels."""
    rng = np.random.default_rng([seed, index])
    y, x = _grid(size)
    horizon = rng.uniform(0.3, 0.6) * size
    canvas = np.zeros((size, size, 3), np.float32)
    labels = np.zeros((size, size), np.uint8)

    def paint(region, name, texture):
        canvas[region] = texture[region]
        labels[region] = _label(name)

    wave = horizon + 0.03 * size * np.sin(x / size * rng.uniform(3, 8) + rng.uniform(0, 6))
    above = y < wave
    split = rng.uniform(0.2, 0.8) * size  # sky and wall may share the upper part
    for name, region in ((rng.choice(["sky", "wall"]), above & (x < split)),
                         (rng.choice(["sky", "wall"]), above & (x >= split))):
        paint(region, name, _sky(rng, size) if name == "sky" else _wall(rng, size))
    boundary = rng.uniform(0.2, 0.8) * size + 0.08 * size * np.sin(y / size * rng.uniform(2, 6))
    grounds = rng.choice(["floor", "grass", "water"], size=2)
    textures = {"floor": lambda: _floor(rng, size, horizon), "grass": lambda: _grass(rng, size),
                "water": lambda: _water(rng, size)}
    for name, region in ((grounds[0], ~above & (x < boundary)), (grounds[1], ~above & (x >= boundary))):
        paint(region, name, textures[name]())
    for _ in range(rng.integers(0, 3)):  # clutter: label 0, ignored
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.03, 0.08) * size
        blob = (x - cx) ** 2 + ((y - cy) * rng.uniform(0.5, 2)) ** 2 < r**2
        canvas[blob], labels[blob] = rng.uniform(0.3, 0.6), 0
    for _ in range(rng.integers(1, 5)):
        name = THINGS[rng.integers(len(THINGS))]
        radius = rng.uniform(0.07, 0.18) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        shape = fill_polygon(shape_outline(name, cx, cy, radius, rng.uniform(0, 2 * math.pi)), size)
        low, high = THING_HUES[name]
        hue = rng.uniform(low, high + (1 if high < low else 0)) % 1.0
        paint(shape, name, 0.8 * saturated(hue) + 0.2 * smooth_texture(rng, size, size, 4))
    shading = 0.85 + 0.3 * smooth_texture(rng, size, size, 3).mean(2, keepdims=True)  # uneven light
    return (np.clip(canvas * shading, 0, 1) * 255).round().astype(np.uint8), labels


DATASET = ImageFolderDataset(
    manifest="scenes.json",
    header={"version": FORMAT_VERSION, "classes": CLASSES, "palette": PALETTE},
    splits={"training": SplitSpec(1000, 0), "validation": SplitSpec(100, 1)},
    default_size=IMAGE_SIZE,
    render=render_scene,
)
SPLITS = DATASET.splits
MANIFEST = DATASET.manifest
write_scenes_split = DATASET.write_split
ensure_scenes = DATASET.ensure
