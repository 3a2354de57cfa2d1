"""``pe-dense features``: dense features of many images, in batches, saved with their PCA pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .atomic_files import atomic_output
from .data.image_sources import ImageSource
from .models.inference import extract
from .models.preprocess import Size
from .models.vision_transformer import PEVisionTransformer
from .viz.images import colors_to_image
from .viz.pca import pca_rgb


def iter_features(
    encoder: PEVisionTransformer,
    sources: Sequence[ImageSource],
    *,
    size: Size,
    layer: int = -1,
    batch_size: int = 8,
    precision: str = "fp32",
    stride: Optional[int] = None,
) -> Iterator[tuple[ImageSource, Image.Image, torch.Tensor]]:
    """(source, image, features (C, h, w)) for every source, in batches; ``stride``: a denser grid by
    shift-and-stitch (pe_dense.models.inference.extract)."""
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        images = [s.load() for s in chunk]
        features = extract(encoder, images, size=size, layer=layer, precision=precision, stride=stride)
        yield from zip(chunk, images, features)


def save_outputs(out_dir: Path, name: str, image: Image.Image, features: torch.Tensor) -> dict:
    """Write ``<name>.npy`` (C, h, w) float32 features and ``<name>_pca.png`` at the image's size."""
    feature_path, picture_path = out_dir / f"{name}.npy", out_dir / f"{name}_pca.png"
    with atomic_output(feature_path) as tmp:
        np.save(tmp, features.numpy())
    with atomic_output(picture_path) as tmp:
        colors_to_image(pca_rgb(features), image.size).save(tmp)
    return {"name": name, "features": feature_path.name, "pca": picture_path.name, "shape": list(features.shape)}
