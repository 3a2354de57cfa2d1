"""What ``pe-dense depth`` writes per image: the depth as a 16-bit PNG (NYU's millimetres) and a float
``.npy`` (metres), a picture coloured by depth with a colour bar in metres, optionally a point cloud
(binary PLY with colours and normals); and the manifest's entries."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import kornia
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

from ...atomic_files import atomic_output
from ...data.depth_scenes import DEPTH_SCALE, NYU_INTRINSICS
from ...viz.images import heatmap
from .predict import DepthPredictor, checked_images

COLOUR_MAP = "Spectral"  # near is red, far is blue


def default_focal_length(width: int) -> float:
    """The focal length in pixels assumed when none is given: NYU-Depth-v2's camera (the data depth
    models are trained on) scaled to the image width, about 63 degrees across."""
    return NYU_INTRINSICS[0] * width / 640


def depth_picture(image: np.ndarray, depth: np.ndarray, low: float, high: float) -> Image.Image:
    """The image, its depth coloured over [low, high] metres, and a colour bar with ticks in metres."""
    height, width = depth.shape
    coloured = Image.fromarray((heatmap(depth, COLOUR_MAP, low, high) * 255).round().astype(np.uint8))
    bar_width, label_width = 14, 52
    canvas = Image.new("RGB", (2 * width + 8 + bar_width + label_width, height), "white")
    canvas.paste(Image.fromarray(image), (0, 0))
    canvas.paste(coloured, (width + 4, 0))
    top, bottom = 6, height - 6  # the bar runs from high (top) to low (bottom)
    ramp = np.linspace(high, low, max(bottom - top, 2))[:, None].repeat(bar_width, 1)
    bar = Image.fromarray((heatmap(ramp, COLOUR_MAP, low, high) * 255).round().astype(np.uint8))
    x = 2 * width + 8
    canvas.paste(bar, (x, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((x - 1, top - 1, x + bar_width, top + bar.height), outline="black")
    for tick in MaxNLocator(nbins=5).tick_values(low, high):
        if low <= tick <= high and high > low:
            y = top + (high - tick) / (high - low) * (bar.height - 1)
            draw.line((x + bar_width, y, x + bar_width + 3, y), fill="black")
            draw.text((x + bar_width + 5, y - 5), f"{tick:g} m", fill="black")
    return canvas


def point_cloud(image: np.ndarray, depth: np.ndarray, focal: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (N, 3) in metres in the camera frame (x right, y down, z forward), their colours (N, 3)
    uint8 and unit normals (N, 3) facing the camera, for the pixels with depth, through a pinhole camera
    with this focal length (pixels) and the principal point at the image centre (kornia's unprojection,
    pixel (u, v) at integer coordinates)."""
    height, width = depth.shape
    camera = torch.tensor([[[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]]],
                          dtype=torch.float64)
    d = torch.from_numpy(depth.astype(np.float64))[None]
    points = kornia.geometry.depth.depth_to_3d_v2(d, camera)[0].reshape(-1, 3)
    normals = kornia.geometry.depth.depth_to_normals(d[:, None], camera)[0].permute(1, 2, 0).reshape(-1, 3)
    normals = torch.where(((normals * points).sum(1, keepdim=True) > 0), -normals, normals)
    keep = (d.reshape(-1) > 0).numpy()
    return (points.numpy()[keep].astype(np.float32), image.reshape(-1, 3)[keep],
            normals.numpy()[keep].astype(np.float32))


def write_ply(path: Path, points: np.ndarray, colours: np.ndarray, normals: np.ndarray) -> None:
    """A binary little-endian PLY of coloured points with normals (MeshLab, Open3D, CloudCompare...)."""
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"),
                                          ("nz", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis], vertex["n" + axis] = points[:, i], normals[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colours[:, i]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}",
              *(f"property float {name}" for name in ("x", "y", "z", "nx", "ny", "nz")),
              *(f"property uchar {name}" for name in ("red", "green", "blue")), "end_header"]
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(vertex.tobytes())


def estimate_depth_images(predictor: DepthPredictor, sources, out: Path, ply: bool = False,
                          focal: Optional[float] = None) -> dict:
    """Per image ``<name>.png`` (uint16, millimetres, as NYU stores depth), ``<name>.npy`` (float32
    metres), ``<name>_depth.png`` (picture with a colour bar) and with ``ply`` ``<name>.ply``; returns
    the manifest's image entries. Every image is read before anything is written, so an unreadable
    one leaves ``out`` untouched."""
    entries = []
    for source, image in checked_images(sources, out):
        depth = predictor(image)
        name = source.name
        with atomic_output(out / f"{name}.png") as tmp:
            Image.fromarray(np.clip(depth * DEPTH_SCALE, 0, 65535).round().astype(np.uint16)).save(tmp)
        with atomic_output(out / f"{name}.npy") as tmp:
            np.save(tmp, depth.astype(np.float32))
        low, high = float(depth.min()), float(depth.max())
        with atomic_output(out / f"{name}_depth.png") as tmp:
            depth_picture(image, depth, low, high).save(tmp)
        entry = {"name": name, "height": image.shape[0], "width": image.shape[1], "depth_png": f"{name}.png",
                 "depth_npy": f"{name}.npy", "picture": f"{name}_depth.png",
                 "depth_m": {"min": round(low, 4), "median": round(float(np.median(depth)), 4), "max": round(high, 4)}}
        if ply:
            f = focal or predictor.focal_length or default_focal_length(image.shape[1])
            write_ply(out / f"{name}.ply", *point_cloud(image, depth, f))
            entry.update(ply=f"{name}.ply", focal_length_px=round(f, 3))
        entries.append(entry)
    manifest = {"images": entries, "depth_png_scale": DEPTH_SCALE,
                "depth_range_m": [predictor.min_depth, predictor.max_depth]}
    if ply:
        manifest["focal_length"] = ("given" if focal is not None else "the training data's declared camera"
                                    if predictor.focal_length else
                                    "NYU-Depth-v2's camera scaled to the image width (518.86 px at 640)")
    return manifest
