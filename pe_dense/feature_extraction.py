"""Dense features of many images: input discovery, batched extraction, and saved outputs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .atomic_files import atomic_output
from .data.samples import SAMPLE_IMAGES, sample_image
from .models.preprocess import Size, load_image, preprocess
from .models.vision_transformer import PEVisionTransformer
from .viz.images import colors_to_image
from .viz.pca import pca_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SAMPLE_PREFIX = "sample:"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ImageSource:
    """An input image: a name for its outputs and a way to load it."""

    name: str
    load: Callable[[], Image.Image]


def find_images(specs: Sequence[str]) -> list[ImageSource]:
    """Expand image arguments: files, folders (their images, sorted) and ``sample:NAME`` built-in images.

    Every argument is checked before anything runs; output names are made unique.
    """
    sources = []
    for spec in specs:
        if spec.startswith(SAMPLE_PREFIX):
            name = spec[len(SAMPLE_PREFIX):]
            if name not in SAMPLE_IMAGES:
                raise ValueError(f"unknown sample image '{name}', expected one of {', '.join(SAMPLE_IMAGES)}")
            sources.append(ImageSource(name, lambda n=name: sample_image(n)))
            continue
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"folder '{path}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"image '{spec}' does not exist")
        sources += [ImageSource(p.stem, lambda p=p: load_image(p)) for p in files]
    return _unique_names(sources)


def _unique_names(sources: list[ImageSource]) -> list[ImageSource]:
    seen: dict[str, int] = {}
    unique = []
    for source in sources:
        count = seen.get(source.name, 0)
        seen[source.name] = count + 1
        unique.append(source if count == 0 else ImageSource(f"{source.name}_{count}", source.load))
    return unique


def extract(
    encoder: PEVisionTransformer,
    images: Sequence[Image.Image],
    *,
    size: Size,
    layer: int = -1,
    precision: str = "fp32",
) -> torch.Tensor:
    """Dense features (B, C, h, w), float32 on the CPU, of a batch of PIL images resized to ``size``."""
    return extract_layers(encoder, images, size=size, layers=(layer,), precision=precision)[0]


def extract_layers(
    encoder: PEVisionTransformer,
    images: Sequence[Image.Image],
    *,
    size: Size,
    layers: Sequence[int],
    precision: str = "fp32",
) -> list[torch.Tensor]:
    """Dense features (B, C, h, w) after each block in ``layers``, from one forward pass."""
    device = next(encoder.parameters()).device
    batch = torch.stack([preprocess(image, size) for image in images]).to(device)
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        maps = encoder.forward_intermediates(batch, layers)
    return [m.float().cpu() for m in maps]


def iter_features(
    encoder: PEVisionTransformer,
    sources: Sequence[ImageSource],
    *,
    size: Size,
    layer: int = -1,
    batch_size: int = 8,
    precision: str = "fp32",
) -> Iterator[tuple[ImageSource, Image.Image, torch.Tensor]]:
    """(source, image, features (C, h, w)) for every source, in batches."""
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        images = [s.load() for s in chunk]
        features = extract(encoder, images, size=size, layer=layer, precision=precision)
        yield from zip(chunk, images, features)


def save_outputs(out_dir: Path, name: str, image: Image.Image, features: torch.Tensor) -> dict:
    """Write ``<name>.npy`` (C, h, w) float32 features and ``<name>_pca.png`` at the image's size."""
    feature_path, picture_path = out_dir / f"{name}.npy", out_dir / f"{name}_pca.png"
    with atomic_output(feature_path) as tmp:
        np.save(tmp, features.numpy())
    with atomic_output(picture_path) as tmp:
        colors_to_image(pca_rgb(features), image.size).save(tmp)
    return {"name": name, "features": feature_path.name, "pca": picture_path.name, "shape": list(features.shape)}


def parse_size(text: Optional[str], default: int) -> tuple[int, int]:
    """(height, width) from ``"512"`` (square) or ``"480x640"``; None gives ``default`` square."""
    if text is None:
        return default, default
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size must be N or HxW with positive integers, got '{text}'")
    return int(parts[0]), int(parts[-1])
