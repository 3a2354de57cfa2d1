"""A built-in monocular-depth dataset: ray-cast rooms with exact depth, in the NYU-Depth-v2 file layout.

Each image is a pinhole view of a box-shaped room (a chequered floor in perspective, papered walls,
a ceiling) holding spheres and boxes that stand on the floor, lit by a lamp under the ceiling with
Lambertian shading. The camera stands 1-1.6 m above the floor, pitched down by up to 20 degrees and
turned left or right by up to 20 degrees, with NYU's Kinect intrinsics scaled to the image size
(:data:`NYU_INTRINSICS`), so depths span roughly 0.5-9 m as NYU's do.

Depth is the distance along the optical axis (as a depth camera measures it), exact per pixel centre,
stored like mmsegmentation's NYU data: ``<root>/images/{train,test}/scene_XXXXXX.jpg`` and
``<root>/annotations/{train,test}/scene_XXXXXX.png``, 16-bit PNGs in millimetres (0 = no depth),
read with ``depth_rescale_factor=1e-3``. A real NYU-Depth-v2 in that layout drops in by path.

Generation is deterministic: image ``i`` of a split depends only on the split's seed and ``i``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import numpy as np
from PIL import Image

from .drawing import saturated
from .generated import ImageFolderDataset, SplitSpec

FORMAT_VERSION = 1
IMAGE_SIZE = (120, 160)  # (height, width): NYU's 480x640 at a quarter
DEPTH_SCALE = 1000  # PNG units per metre
# NYU-Depth-v2's colour camera (fx, fy, cx, cy) at 640x480.
NYU_INTRINSICS = (518.857901, 519.469611, 325.582449, 253.736166)
MAX_DEPTH = 10.0  # metres; farther surfaces are stored as 0 (no depth), as NYU's evaluation range ends there


def intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of NYU's camera scaled to an image of this size."""
    fx, fy, cx, cy = NYU_INTRINSICS
    sx, sy = width / 640, height / 480
    return fx * sx, fy * sy, cx * sx, cy * sy


def _rotation(pitch: float, yaw: float) -> np.ndarray:
    """Camera-to-world rotation: camera x right, y down, z forward; world y up. Pitch > 0 looks down."""
    flip = np.diag([1.0, -1.0, 1.0])  # image y points down, world y up
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    tilt = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # forward (0,0,1) -> (0,-sin,cos) in world
    turn = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return turn @ tilt @ flip


def _plane(origin, dirs, axis, value):
    """Distances along ``dirs`` to the plane ``coordinate[axis] == value`` (inf where parallel or behind)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (value - origin[axis]) / dirs[:, axis]
    return np.where(t > 1e-6, t, np.inf)


def _sphere(origin, dirs, centre, radius):
    oc = origin - centre
    b = dirs @ oc
    c = oc @ oc - radius**2
    a = np.einsum("ij,ij->i", dirs, dirs)
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc > 0) & (t > 1e-6), t, np.inf)


def _box(origin, dirs, centre, half, yaw):
    """Slab test in the box's frame (turned by ``yaw`` about the vertical); also the hit face's axis."""
    c, s = math.cos(yaw), math.sin(yaw)
    to_box = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    o = to_box @ (origin - centre)
    d = dirs @ to_box.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - o) / d, (half - o) / d
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    near = np.where(np.isnan(near), -np.inf, near)
    far = np.where(np.isnan(far), np.inf, far)
    t_in, face = near.max(1), near.argmax(1)
    t = np.where((t_in <= far.min(1)) & (t_in > 1e-6), t_in, np.inf)
    sign = -np.sign(d[np.arange(len(d)), face])
    normal_box = np.zeros_like(d)
    normal_box[np.arange(len(d)), face] = sign
    return t, normal_box @ to_box  # normals back in world axes


class Room(NamedTuple):
    """A scene: world y is up and the floor is y = 0; the room spans x in [left, right], z up to
    ``back`` (a wall also closes it 1 m behind the camera) and y up to ``ceiling``."""

    eye: np.ndarray  # camera centre (3,)
    rotation: np.ndarray  # camera-to-world (3, 3)
    left: float
    right: float
    back: float
    ceiling: float
    objects: tuple  # ("sphere", centre, radius, rgb) and ("box", centre, half sizes, yaw, rgb)


def sample_room(rng: np.random.Generator) -> Room:
    """A random room, camera and furniture (as described in the module's documentation)."""
    rotation = _rotation(math.radians(rng.uniform(0, 20)), math.radians(rng.uniform(-20, 20)))
    eye = np.array([0.0, rng.uniform(1.0, 1.6), 0.0])
    left, right = -rng.uniform(1.5, 3.5), rng.uniform(1.5, 3.5)
    back, ceiling = rng.uniform(4.5, 8.0), rng.uniform(2.5, 3.0)
    objects = []
    for _ in range(rng.integers(2, 7)):
        x, z = rng.uniform(left + 0.4, right - 0.4), rng.uniform(1.2, back - 0.4)
        colour = saturated(rng.uniform()) * rng.uniform(0.6, 1.0)
        if rng.random() < 0.5:
            radius = rng.uniform(0.15, 0.6)
            objects.append(("sphere", np.array([x, radius, z]), radius, colour))
        else:
            half = np.array([rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.9), rng.uniform(0.15, 0.6)])
            objects.append(("box", np.array([x, half[1], z]), half, rng.uniform(0, math.pi), colour))
    return Room(eye, rotation, left, right, back, ceiling, tuple(objects))


def ray_cast(room: Room, size: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The room seen by NYU's camera scaled to ``size`` (height, width): (H, W, 3) uint8 RGB, and
    (H, W) float64 depth in metres along the optical axis (inf where a ray hits nothing). ``rng``
    draws the textures, the lamp and the sensor noise."""
    height, width = size
    fx, fy, cx, cy = intrinsics(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1).reshape(-1, 3)  # z = 1: t is depth
    dirs = rays @ room.rotation.T
    eye = room.eye
    surfaces = [  # (distances, world normals (N, 3) or one normal, "floor" / "ceiling" / "wall" / rgb)
        (_plane(eye, dirs, 1, 0.0), np.array([0, 1, 0]), "floor"),
        (_plane(eye, dirs, 1, room.ceiling), np.array([0, -1, 0]), "ceiling"),
        (_plane(eye, dirs, 0, room.left), np.array([1, 0, 0]), "wall"),
        (_plane(eye, dirs, 0, room.right), np.array([-1, 0, 0]), "wall"),
        (_plane(eye, dirs, 2, room.back), np.array([0, 0, -1]), "wall"),
        (_plane(eye, dirs, 2, -1.0), np.array([0, 0, 1]), "wall"),  # behind the camera, for wide turns
    ]
    for kind, centre, *shape, colour in room.objects:
        if kind == "sphere":
            t = _sphere(eye, dirs, centre, shape[0])
            hit = eye + t[:, None] * dirs
            surfaces.append((t, np.nan_to_num((hit - centre) / shape[0]), colour))
        else:
            surfaces.append((*_box(eye, dirs, centre, *shape), colour))

    distances = np.stack([s[0] for s in surfaces])
    nearest = distances.argmin(0)
    t = distances.min(0)
    points = eye + np.where(np.isfinite(t), t, 0)[:, None] * dirs
    normals = np.zeros_like(points)
    albedo = np.zeros_like(points)
    tiles = rng.uniform(0.35, 0.8)
    floor_colours = np.array([0.8, 0.75, 0.65]) * rng.uniform(0.8, 1.1), saturated(rng.uniform()) * 0.3 + 0.15
    wall_colour, stripes = saturated(rng.uniform()) * 0.35 + 0.55, rng.uniform(0.15, 0.4)
    for k, (_, normal, kind) in enumerate(surfaces):
        mine = nearest == k
        normals[mine] = normal[mine] if normal.ndim == 2 else normal
        p = points[mine]
        if isinstance(kind, np.ndarray):
            albedo[mine] = kind
        elif kind == "floor":  # square tiles, a fixed size in metres: perspective shows in their shrinking
            checker = (np.floor(p[:, 0] / tiles) + np.floor(p[:, 2] / tiles)) % 2
            albedo[mine] = np.where(checker[:, None] > 0, *floor_colours)
        elif kind == "wall":  # vertical wallpaper stripes, a fixed width in metres
            albedo[mine] = wall_colour * (0.9 + 0.1 * (np.floor((p[:, 0] + p[:, 2]) / stripes) % 2))[:, None]
        else:
            albedo[mine] = (0.85, 0.85, 0.82)
    lamp = np.array([rng.uniform(room.left, room.right) * 0.5, room.ceiling - 0.2, rng.uniform(1.0, room.back - 1.0)])
    to_lamp = lamp - points
    distance = np.linalg.norm(to_lamp, axis=1, keepdims=True)
    lambert = np.clip(np.einsum("ij,ij->i", normals, to_lamp / distance), 0, 1)[:, None]
    light = 0.35 + 0.9 * lambert / (1 + 0.05 * distance**2)
    pixels = albedo * light + rng.normal(0, 0.01, albedo.shape)
    image = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8).reshape(height, width, 3)
    return image, t.reshape(height, width)


def render_depth_scene(index: int, seed: int, size: Sequence[int] = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of the split with ``seed``: (H, W, 3) uint8 RGB and (H, W) uint16 depth in
    millimetres (0 where there is none within :data:`MAX_DEPTH`)."""
    rng = np.random.default_rng([seed, index])
    image, depth = ray_cast(sample_room(rng), size, rng)
    depth = np.where(np.isfinite(depth) & (depth < MAX_DEPTH), depth, 0.0)
    return image, (depth * DEPTH_SCALE).round().astype(np.uint16)


DATASET = ImageFolderDataset(
    manifest="depth_scenes.json",
    header={"version": FORMAT_VERSION, "depth_scale": DEPTH_SCALE, "max_depth": MAX_DEPTH,
            "nyu_intrinsics": NYU_INTRINSICS},
    splits={"train": SplitSpec(1000, 0), "test": SplitSpec(100, 1)},
    default_size=IMAGE_SIZE,
    render=render_depth_scene,
)
write_depth_split = DATASET.write_split
ensure_depth_scenes = DATASET.ensure


def mean_depth_baseline(root: Union[str, os.PathLike], train: str = "train", test: str = "test") -> dict:
    """What predicting the training split's mean depth everywhere scores on the test split (RMSE in
    metres and d1, per image over depths in (0.001, MAX_DEPTH) m, averaged over images as mmseg's
    DepthMetric does): the bar a trained model has to clear."""
    def depths(split):
        return [np.asarray(Image.open(p), dtype=np.float64) / DEPTH_SCALE
                for p in sorted((Path(root) / "annotations" / split).glob("*.png"))]

    mean = float(np.concatenate([d[d > 0] for d in depths(train)]).mean())
    rmse, d1 = [], []
    for depth in depths(test):
        valid = depth[(depth > 1e-3) & (depth < MAX_DEPTH)]
        rmse.append(np.sqrt(((valid - mean) ** 2).mean()))
        d1.append((np.maximum(valid / mean, mean / valid) < 1.25).mean())
    return {"mean_depth": mean, "rmse": float(np.mean(rmse)), "d1": float(np.mean(d1))}
