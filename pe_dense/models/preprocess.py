"""Images to model input as PE was trained: RGB, resized ("squashed") bilinearly, mapped to [-1, 1]."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike]
Size = Union[int, tuple[int, int]]


MAX_PIXELS_VARIABLE = "PE_DENSE_MAX_IMAGE_PIXELS"
# Every channel, on values scaled to [0, 1] (docs/encoder.md#preprocessing); exports record them.
NORMALIZE_MEAN = 0.5
NORMALIZE_STD = 0.5


@dataclass(frozen=True)
class Pixels:
    """How an image becomes model input: RGB values scaled to [0, 1], resized with ``interpolation`` (a PIL
    filter's name), minus ``mean`` and over ``std`` per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


PE_PIXELS = Pixels((NORMALIZE_MEAN,) * 3, (NORMALIZE_STD,) * 3)  # a timm model brings its own (timm_encoder.py)


def parse_size(text: Optional[str], default: int) -> tuple[int, int]:
    """(height, width) from ``"512"`` (square) or ``"480x640"``; None gives ``default`` square."""
    if text is None:
        return default, default
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size must be N or HxW with positive integers, got '{text}'")
    return int(parts[0]), int(parts[-1])


def aspect_size(width: int, height: int, patch: int, *, short_side: Optional[int] = None,
                max_tokens: Optional[int] = None) -> tuple[int, int]:
    """(height, width), multiples of ``patch``, keeping a ``width`` x ``height`` image's aspect: its short side
    scaled to ``short_side`` (both sides rounded to the nearest multiple), or the largest size with at most
    ``max_tokens`` patches (both sides rounded down). Exactly one of the two is given."""
    if (short_side is None) == (max_tokens is None):
        raise ValueError("give exactly one of short_side and max_tokens")
    if short_side is not None:
        scale = short_side / min(width, height)
        return max(patch, round(height * scale / patch) * patch), max(patch, round(width * scale / patch) * patch)
    scale = math.sqrt(max_tokens / (width * height)) * patch  # pixels per token side
    return max(1, math.floor(height * scale / patch)) * patch, max(1, math.floor(width * scale / patch)) * patch


def load_image(path: Union[str, os.PathLike]) -> Image.Image:
    """An RGB PIL image from a file, with a clear error for files that are not images.

    Pillow refuses images of more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` (a guard against
    decompression bombs); ``$PE_DENSE_MAX_IMAGE_PIXELS`` sets that limit (0: none) for trusted files.
    """
    limit = os.environ.get(MAX_PIXELS_VARIABLE)
    default_limit = Image.MAX_IMAGE_PIXELS
    try:
        if limit is not None:
            Image.MAX_IMAGE_PIXELS = int(limit) or None
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image '{path}' does not exist") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"'{path}' is too large to open safely ({e}); if you trust the file, raise the limit with "
                         f"{MAX_PIXELS_VARIABLE}=<pixels> (0: no limit)") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read '{path}' as an image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = default_limit


def to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")  # the caller's image is only read
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image array, got {image.dtype}")
        return Image.fromarray(image[..., :3])
    return load_image(image)


def preprocess(image: ImageLike, size: Size, pixels: Pixels = PE_PIXELS) -> torch.Tensor:
    """(3, H, W) float tensor, in [-1, 1] for PE; ``size`` is a side (square) or (height, width).

    PIL's resize is what the released transforms (torchvision Resize on PIL images) use: bilinear for PE.
    """
    height, width = (size, size) if isinstance(size, int) else size
    resized = to_pil(image).resize((width, height), Image.Resampling[pixels.interpolation.upper()])
    values = torch.from_numpy(np.asarray(resized, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
    mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in (pixels.mean, pixels.std))
    return values.sub_(mean).div_(std)  # ToTensor then Normalize, in that order
