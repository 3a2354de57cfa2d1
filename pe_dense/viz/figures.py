"""Matplotlib figures: panels side by side, layer sweeps, correspondences.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so they work the same in
scripts, the CLI and notebooks (``display(fig)``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..atomic_files import atomic_output
from .correspondence import Matches, token_center
from .images import colors_to_image
from .pca import Features, PCAColorizer

Panel = Union[Image.Image, np.ndarray]


def panels_figure(panels: Sequence[tuple[str, Panel]], columns: Optional[int] = None, panel_height: float = 3.0):
    """One row (or ``columns`` per row) of titled pictures: PIL images or (h, w, 3) arrays in [0, 1]."""
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("no panels to draw")
    columns = columns or len(panels)
    rows = math.ceil(len(panels) / columns)
    aspect = max(w / h for w, h in (p.size if isinstance(p, Image.Image) else p.shape[1::-1] for _, p in panels))
    fig = Figure(figsize=(columns * panel_height * aspect, rows * (panel_height + 0.35)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(np.asarray(picture), interpolation="bilinear")
        ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    return fig


def layer_sweep_figure(image: Image.Image, maps: Mapping[str, Features], mode: str = "rgb", **kw):
    """The image, then a PCA picture per named feature map (e.g. ``{"layer 4": f4, ...}``), each fitted on itself."""
    panels = [("image", image)]
    for name, features in maps.items():
        panels.append((name, PCAColorizer(mode).fit_transform(features, size=(image.height, image.width))))
    return panels_figure(panels, **kw)


def matches_figure(image_a: Image.Image, features_a: Features, image_b: Image.Image, features_b: Features,
                   matches: Matches, panel_height: float = 4.0):
    """Two images side by side with a line from each matched token centre to its partner."""
    from matplotlib import colormaps
    from matplotlib.patches import ConnectionPatch

    fig = panels_figure([("source", image_a), ("target", image_b)], panel_height=panel_height)
    ax_a, ax_b = fig.axes
    grid_a, grid_b = np.asarray(features_a).shape[1:], np.asarray(features_b).shape[1:]
    colors = colormaps["hsv"](np.linspace(0.0, 1.0, len(matches.source), endpoint=False))
    for color, src, tgt in zip(colors, matches.source, matches.target):
        xa, ya = token_center(src, image_a.size, grid_a)
        xb, yb = token_center(tgt, image_b.size, grid_b)
        ax_a.plot(xa, ya, "o", color=color, markersize=5, markeredgecolor="white")
        ax_b.plot(xb, yb, "o", color=color, markersize=5, markeredgecolor="white")
        fig.add_artist(ConnectionPatch((xa, ya), (xb, yb), "data", "data", axesA=ax_a, axesB=ax_b,
                                       color=color, linewidth=1.0, alpha=0.8))
    return fig


def save_figure(fig, path: Union[str, Path], dpi: int = 100) -> Path:
    """Write a figure as PNG (atomically) and free it."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    fig.clear()
    return path


def save_picture(picture: Panel, path: Union[str, Path], size: Optional[tuple[int, int]] = None) -> Path:
    """Write a PIL image, or (h, w, 3) colours in [0, 1] upsampled to ``size`` = (width, height), as a PNG
    (atomically)."""
    path = Path(path)
    image = picture if isinstance(picture, Image.Image) else colors_to_image(picture, size)
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")
    return path
