"""The ``pe-dense viz`` job: feature pictures of a set of images at several layers, written as PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image

from ..data.image_sources import ImageSource
from ..models.inference import extract_layers
from ..models.preprocess import Size
from ..models.vision_transformer import PEVisionTransformer
from .correspondence import similarity_map, token_at, token_center
from .figures import panels_figure, save_figure, save_picture
from .images import colors_to_image, heatmap, mark_points, overlay, upsample
from .pca import PCAColorizer

VIZ_MODES = ("pca", "lch", "corr")
FIT_CHOICES = ("each", "first", "all")  # PCA fitted per image, on the first image, or on all images together
SWEEP_DPI = 100


def write_pictures(
    encoder: PEVisionTransformer,
    sources: Sequence[ImageSource],
    out: Path,
    *,
    size: Size,
    layers: Sequence[int] = (-1,),
    mode: str = "pca",
    fit: str = "each",
    point: Optional[tuple[float, float]] = None,
    batch_size: int = 8,
    precision: str = "fp32",
    sweep_height: int = 300,
    stride: Optional[int] = None,
) -> list[dict]:
    """Write one picture per image and layer (and a side-by-side sweep per image when there are
    several layers) into ``out``; returns what was written, per image.

    ``pca``/``lch`` colour the PCA of each layer's tokens (``fit`` decides which tokens the PCA is
    fitted on). ``corr`` shows the cosine similarity of the token under ``point`` (x, y pixels of
    the first image; its centre by default) to every token of every image. Sweeps have panels
    ``sweep_height`` pixels high. ``stride``: a denser token grid by shift-and-stitch.
    """
    if mode not in VIZ_MODES:
        raise ValueError(f"mode must be one of {', '.join(VIZ_MODES)}, got '{mode}'")
    if fit not in FIT_CHOICES:
        raise ValueError(f"fit must be one of {', '.join(FIT_CHOICES)}, got '{fit}'")
    blocks = list(dict.fromkeys(encoder.layer_index(layer) for layer in layers))
    if mode == "corr" and point is not None:
        token_at(point, sources[0].load().size, (1, 1))  # inside the first image, checked before any work
    # every map is kept until the end: --fit all needs them together (a few MB per image and layer)
    names, images, maps = [], [], []  # maps[i][j]: image i, block j, (C, h, w)
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        loaded = [s.load() for s in chunk]
        per_block = extract_layers(encoder, loaded, size=size, layers=blocks, precision=precision,
                                   stride=stride)
        names += [s.name for s in chunk]
        images += loaded
        maps += [list(per_image) for per_image in zip(*per_block)]
    if mode == "corr":
        pictures = _correspondence_pictures(images, maps, point)
    else:
        pictures = _pca_pictures(images, maps, "rgb" if mode == "pca" else "lch", fit)

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image, row in zip(names, images, pictures):
        files = [save_picture(p, out / f"{name}_block{b}_{mode}.png").name for b, p in zip(blocks, row)]
        entry = {"name": name, "pictures": files}
        if len(blocks) > 1:
            panels = [("image", image)] + [(_title(encoder, b), p) for b, p in zip(blocks, row)]
            figure = panels_figure(panels, panel_height=sweep_height / SWEEP_DPI)
            entry["sweep"] = save_figure(figure, out / f"{name}_{mode}.png", dpi=SWEEP_DPI).name
        written.append(entry)
    return written


def _title(encoder: PEVisionTransformer, block: int) -> str:
    return f"block {block}" + (" (last)" if block == encoder.num_blocks - 1 else "")


def _pca_pictures(images: list[Image.Image], maps: list[list[torch.Tensor]], mode: str, fit: str):
    pictures = [[] for _ in images]
    for j in range(len(maps[0])):
        layer_maps = [m[j] for m in maps]
        shared = None
        if fit == "first":
            shared = PCAColorizer(mode).fit(layer_maps[0])
        elif fit == "all":
            shared = PCAColorizer(mode).fit(layer_maps)
        for i, (image, features) in enumerate(zip(images, layer_maps)):
            colorizer = shared or PCAColorizer(mode).fit(features)
            pictures[i].append(colors_to_image(colorizer.transform(features, size=(image.height, image.width))))
    return pictures


def _correspondence_pictures(images: list[Image.Image], maps: list[list[torch.Tensor]],
                             point: Optional[tuple[float, float]]):
    first = images[0]
    point = point or (first.width / 2, first.height / 2)
    pictures = [[] for _ in images]
    for j in range(len(maps[0])):
        query = maps[0][j]
        token = token_at(point, first.size, tuple(query.shape[1:]))
        for i, (image, row) in enumerate(zip(images, maps)):
            similarity = similarity_map(query, token, row[j])
            picture = overlay(image, heatmap(upsample(similarity, (image.height, image.width))))
            if i == 0:
                mark = point
            else:  # the best match
                best = divmod(int(similarity.argmax()), similarity.shape[1])
                mark = token_center(best, image.size, tuple(similarity.shape))
            pictures[i].append(mark_points(picture, [mark]))
    return pictures
