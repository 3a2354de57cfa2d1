"""A generated "moving shapes" video with per-frame labels, written in the DAVIS 2017 layout.

Textured shapes move over a textured, slowly panning background: they bounce, grow and shrink, and
pass in front of one another (fixed depth order), so a tracker meets motion, scale change and
occlusion. Deterministic for a given seed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageDraw

from .drawing import muted, saturated, smooth_texture
from .generated import datasets_root
from .label_maps import davis_palette, write_label_png

SHAPES = ("ellipse", "rectangle", "triangle", "diamond")


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        return [(cx, cy - r), (cx + 0.87 * r, cy + 0.5 * r), (cx - 0.87 * r, cy + 0.5 * r)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    return [(cx - r, cy - r), (cx + r, cy + r)]  # bounding box for ellipse / rectangle


def render_moving_shapes(num_frames: int = 30, size: tuple[int, int] = (240, 320), num_objects: int = 3,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8, labels (T, H, W) uint8 with objects 1..num_objects)."""
    if not 1 <= num_objects <= len(SHAPES) * 4:
        raise ValueError(f"num_objects must be in 1..{len(SHAPES) * 4}, got {num_objects}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    height, width = size
    rng = np.random.default_rng(seed)
    background = muted(smooth_texture(rng, height, width + num_frames, 16))
    hues = (rng.random() + np.arange(num_objects) / num_objects) % 1.0
    objects = []
    for i in range(num_objects):
        objects.append({
            "kind": SHAPES[i % len(SHAPES)],
            "color": saturated(hues[i]),
            "texture": smooth_texture(rng, height, width, 6),
            "pos": rng.uniform(0.25, 0.75, 2) * [width, height],
            "vel": rng.uniform(2.0, 5.0, 2) * rng.choice([-1, 1], 2),
            "radius": rng.uniform(0.10, 0.16) * min(height, width),
            "phase": rng.uniform(0, 2 * np.pi),
        })
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    labels = np.zeros((num_frames, height, width), dtype=np.uint8)
    for t in range(num_frames):
        canvas = background[:, t:t + width].copy()  # the camera pans one pixel per frame
        label = np.zeros((height, width), dtype=np.uint8)
        for obj_id, obj in enumerate(objects, start=1):  # later objects are in front
            r = obj["radius"] * (1 + 0.3 * np.sin(obj["phase"] + t * 0.15))
            pos, vel = obj["pos"], obj["vel"]
            for axis, limit in enumerate((width, height)):  # bounce off the borders
                if not r <= pos[axis] <= limit - r:
                    vel[axis] = -vel[axis]
                    pos[axis] = np.clip(pos[axis], r, limit - r)
            stencil = Image.new("L", (width, height))
            draw = ImageDraw.Draw(stencil)
            shape = _polygon(obj["kind"], pos[0], pos[1], r)
            {"ellipse": draw.ellipse, "rectangle": draw.rectangle}.get(obj["kind"], draw.polygon)(shape, fill=1)
            inside = np.asarray(stencil, dtype=bool)
            canvas[inside] = (0.8 * obj["color"] + 0.2 * obj["texture"])[inside]
            label[inside] = obj_id
            obj["pos"] = pos + vel
        frames[t] = (canvas * 255).round().astype(np.uint8)
        labels[t] = label
    return frames, labels


def write_moving_shapes(root: Union[str, os.PathLike], sequence: str = "moving-shapes", **kwargs) -> Path:
    """Write the sequence under ``root`` in the DAVIS 2017 layout (480p folders, val image set listing
    it) and return ``root``; ``kwargs`` go to :func:`render_moving_shapes`."""
    root = Path(root)
    frames, labels = render_moving_shapes(**kwargs)
    image_dir = root / "JPEGImages" / "480p" / sequence
    label_dir = root / "Annotations" / "480p" / sequence
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    palette = davis_palette()
    for t, (frame, label) in enumerate(zip(frames, labels)):
        Image.fromarray(frame).save(image_dir / f"{t:05d}.jpg", quality=95)
        write_label_png(label_dir / f"{t:05d}.png", label, palette)
    listing = root / "ImageSets" / "2017" / "val.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    names = listing.read_text().split() if listing.exists() else []
    listing.write_text("\n".join(sorted(set(names) | {sequence})) + "\n")
    return root


def ensure_moving_shapes(root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The built-in moving-shapes video in the DAVIS layout under ``root`` (default: the built-in datasets'
    root), written on first use."""
    root = Path(root) if root is not None else datasets_root() / "moving_shapes"
    if not (root / "ImageSets").is_dir():
        write_moving_shapes(root)
    return root
