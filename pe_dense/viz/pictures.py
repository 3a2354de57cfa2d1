"""The ``pe-dense viz`` job: pictures of a set of images at several layers, written as PNGs (and arrays)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..atomic_files import atomic_output
from ..data.image_sources import ImageSource
from ..models.attention_maps import attention_map
from ..models.inference import autocast, extract_layers
from ..models.preprocess import Size, preprocess
from ..models.vision_transformer import PEVisionTransformer
from .correspondence import similarity_map, token_at, token_center
from .figures import panels_figure, save_figure, save_picture
from .foreground import foreground_mask
from .guided_upsampling import UPSAMPLING, to_pixels
from .images import colors_to_image, heatmap, mark_points, overlay, token_mask
from .pca import PCAColorizer
from .token_norms import norm_picture, outlier_tokens, token_norms

VIZ_MODES = ("pca", "lch", "corr", "attention", "norms")
# PCA fitted per image, on the first image, on all images together, or per image on its foreground tokens
FIT_CHOICES = ("each", "first", "all", "foreground")
SWEEP_DPI = 100
HEADS_PER_ROW = 8


class Picture(NamedTuple):
    """One picture of one image at one block, and the files that go with it, (suffix, PIL image, array or
    matplotlib figure) pairs written as ``<image>_block<b>_<suffix>``."""

    image: Image.Image
    files: tuple[tuple[str, Union[Image.Image, np.ndarray, object]], ...] = ()


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
    upsampling: str = "bilinear",
    mask: Optional[np.ndarray] = None,
) -> list[dict]:
    """Write one picture per image and layer (and a side-by-side sweep per image when there are
    several layers) into ``out``; returns what was written, per image.

    ``pca``/``lch`` colour the PCA of each layer's tokens (``fit`` decides which tokens the PCA is
    fitted on; ``foreground``: each image's foreground tokens, from ``mask`` (an (H, W) pixel mask for
    every image) or the first principal component, with the background black and the mask written as
    a PNG). ``corr`` shows the cosine similarity of the token under ``point`` (x, y pixels of the first
    image; its centre by default) to every token of every image. ``attention`` shows what the token
    under ``point`` (default: the class token, or the centre for models without one) attends to,
    averaged over heads, with a figure of every head and the maps as ``.npy`` (heads, h, w).
    ``norms`` shows every token's feature norm with the outliers ringed, and the norms as ``.npy``.
    Sweeps have panels ``sweep_height`` pixels high. ``stride``: a denser token grid by
    shift-and-stitch. ``upsampling``: how token maps reach the image's pixels, ``bilinear`` or
    ``guided`` by the image (joint bilateral).
    """
    check_options(mode, fit, upsampling, stride, mask, point)
    blocks = list(dict.fromkeys(encoder.layer_index(layer) for layer in layers))
    if mode in ("corr", "attention") and point is not None:
        token_at(point, sources[0].load().size, (1, 1))  # inside the first image, checked before any work
    # every map is kept until the end: --fit all needs them together (a few MB per image and layer)
    names, images, maps = [], [], []  # maps[i][j]: image i, block j, (C, h, w) or (heads, h, w)
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        loaded = [s.load() for s in chunk]
        if mode == "attention":
            per_block = _attention_maps(encoder, loaded, size, blocks, point, precision)
        else:
            per_block = extract_layers(encoder, loaded, size=size, layers=blocks, precision=precision, stride=stride)
        names += [s.name for s in chunk]
        images += loaded
        maps += [list(per_image) for per_image in zip(*per_block)]
    if mode == "corr":
        pictures = _correspondence_pictures(images, maps, point, upsampling)
    elif mode == "attention":
        ringed = encoder.use_cls_token and point is None  # the class token has no place to ring
        pictures = [[_attention_picture(image, m, None if ringed else _query_pixel(point, images[0], image, m),
                                        upsampling) for m in row] for image, row in zip(images, maps)]
    elif mode == "norms":
        pictures = [[_norm_picture(image, m, upsampling) for m in row] for image, row in zip(images, maps)]
    else:
        pictures = _pca_pictures(images, maps, "rgb" if mode == "pca" else "lch", fit, upsampling, mask)
    return _save(out, encoder, names, images, blocks, mode, pictures, sweep_height)


def check_options(mode: str, fit: str = "each", upsampling: str = "bilinear", stride: Optional[int] = None,
                  mask=None, point=None) -> None:
    """Refuse a combination of :func:`write_pictures`' options that does not go together (the command line
    checks them before building the model)."""
    if mode not in VIZ_MODES:
        raise ValueError(f"mode must be one of {', '.join(VIZ_MODES)}, got '{mode}'")
    if fit not in FIT_CHOICES:
        raise ValueError(f"fit must be one of {', '.join(FIT_CHOICES)}, got '{fit}'")
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got '{upsampling}'")
    if point is not None and mode not in ("corr", "attention"):
        raise ValueError("a point chooses the query token of modes corr and attention")
    if fit != "each" and mode not in ("pca", "lch"):
        raise ValueError(f"fit chooses the tokens of a PCA (modes pca and lch), not of mode {mode}")
    if mask is not None and fit != "foreground":
        raise ValueError("a mask gives the foreground of fit 'foreground'")
    if stride is not None and mode == "attention":
        raise ValueError("attention maps show one pass of the model: no stride")


def _save(out: Path, encoder, names, images, blocks, mode, pictures, sweep_height) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image, row in zip(names, images, pictures):
        entry = {"name": name, "pictures": [save_picture(p.image, out / f"{name}_block{b}_{mode}.png").name
                                            for b, p in zip(blocks, row)]}
        files = [_save_file(thing, out / f"{name}_block{b}_{suffix}") for b, p in zip(blocks, row)
                 for suffix, thing in p.files]
        if files:
            entry["files"] = files
        if len(blocks) > 1:
            panels = [("image", image)] + [(_title(encoder, b), p.image) for b, p in zip(blocks, row)]
            figure = panels_figure(panels, panel_height=sweep_height / SWEEP_DPI)
            entry["sweep"] = save_figure(figure, out / f"{name}_{mode}.png", dpi=SWEEP_DPI).name
        written.append(entry)
    return written


def _save_file(thing, path: Path) -> str:
    if isinstance(thing, np.ndarray):
        with atomic_output(path) as tmp:
            np.save(tmp, thing)
    elif isinstance(thing, Image.Image):
        save_picture(thing, path)
    else:
        save_figure(thing, path, dpi=SWEEP_DPI)
    return path.name


def _title(encoder: PEVisionTransformer, block: int) -> str:
    return f"block {block}" + (" (last)" if block == encoder.num_blocks - 1 else "")


def _pca_pictures(images, maps, mode: str, fit: str, upsampling: str, mask: Optional[np.ndarray]):
    pictures = [[] for _ in images]
    for j in range(len(maps[0])):
        layer_maps = [m[j] for m in maps]
        shared = None
        if fit == "first":
            shared = PCAColorizer(mode).fit(layer_maps[0])
        elif fit == "all":
            shared = PCAColorizer(mode).fit(layer_maps)
        for i, (image, features) in enumerate(zip(images, layer_maps)):
            if fit == "foreground":
                pictures[i].append(_foreground_picture(image, features, mode, upsampling, mask))
                continue
            colorizer = shared or PCAColorizer(mode).fit(features)
            colors = colorizer.colors(to_pixels(colorizer.project(features), image, upsampling))
            pictures[i].append(Picture(colors_to_image(colors)))
    return pictures


def _foreground_picture(image, features, mode, upsampling, mask) -> Picture:
    """The PCA of the foreground tokens, the background black; the mask at the image's size as a PNG."""
    grid = tuple(features.shape[1:])
    if mask is None:
        tokens = foreground_mask(features).numpy()
        pixels = to_pixels(tokens.astype(np.float32), image, upsampling) > 0.5
    else:  # the user's mask, at each image's size
        pixels = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.NEAREST)) > 0
        tokens = token_mask(pixels, grid)
    if tokens.sum() < 2:
        raise ValueError(f"the foreground of a {grid[0]}x{grid[1]} grid has {tokens.sum()} token(s): too few for a "
                         "PCA")
    colorizer = PCAColorizer(mode).fit(features, tokens)
    colors = colorizer.colors(to_pixels(colorizer.project(features), image, upsampling)) * pixels[..., None]
    return Picture(colors_to_image(colors), (("mask.png", Image.fromarray(pixels.astype(np.uint8) * 255)),))


def _correspondence_pictures(images, maps, point: Optional[tuple[float, float]], upsampling: str):
    first = images[0]
    point = point or (first.width / 2, first.height / 2)
    pictures = [[] for _ in images]
    for j in range(len(maps[0])):
        query = maps[0][j]
        token = token_at(point, first.size, tuple(query.shape[1:]))
        for i, (image, row) in enumerate(zip(images, maps)):
            similarity = similarity_map(query, token, row[j])
            picture = overlay(image, heatmap(to_pixels(similarity, image, upsampling)))
            if i == 0:
                mark = point
            else:  # the best match
                best = divmod(int(similarity.argmax()), similarity.shape[1])
                mark = token_center(best, image.size, tuple(similarity.shape))
            pictures[i].append(Picture(mark_points(picture, [mark])))
    return pictures


def _query_token(point, first: Image.Image, grid: tuple[int, int]) -> tuple[int, int]:
    """The token under ``point`` of the first image; without a point, the centre token (models without a
    class token)."""
    return (grid[0] // 2, grid[1] // 2) if point is None else token_at(point, first.size, grid)


def _query_pixel(point, first: Image.Image, image: Image.Image, heads: torch.Tensor):
    """Where the query token (:func:`_query_token`) is centred in ``image``."""
    grid = tuple(heads.shape[1:])
    return token_center(_query_token(point, first, grid), image.size, grid)


def _attention_maps(encoder, images, size, blocks, point, precision) -> list[torch.Tensor]:
    """(B, heads, h, w) maps per block, of the token under ``point`` in the first image's pixels, the same
    token in every image."""
    device = next(encoder.parameters()).device
    batch = torch.stack([preprocess(image, size) for image in images]).to(device)
    grid = encoder.token_grid(*batch.shape[-2:])
    query = None if encoder.use_cls_token and point is None else _query_token(point, images[0], grid)
    with autocast(device, precision):
        return [attention_map(encoder, batch, block, query).cpu() for block in blocks]


def _attention_picture(image: Image.Image, heads: torch.Tensor, query_pixel, upsampling: str) -> Picture:
    """The head-averaged map over the image (the query token's centre ringed), a figure of every head, and
    the maps as an array."""
    picture = overlay(image, heatmap(to_pixels(heads.mean(0), image, upsampling)), alpha=0.7)
    if query_pixel is not None:
        picture = mark_points(picture, [query_pixel])
    panels = [(f"head {h}", overlay(image, heatmap(to_pixels(m, image, upsampling)), alpha=0.7))
              for h, m in enumerate(heads)]
    figure = panels_figure(panels, columns=min(len(panels), HEADS_PER_ROW))
    return Picture(picture, (("heads.png", figure), ("attention.npy", heads.numpy())))


def _norm_picture(image: Image.Image, features: torch.Tensor, upsampling: str) -> Picture:
    norms = token_norms(features)
    picture = norm_picture(image, norms, pixels=to_pixels(norms, image, upsampling))
    return Picture(picture, (("norms.npy", norms.numpy()), ("outliers.npy", outlier_tokens(norms).numpy())))
