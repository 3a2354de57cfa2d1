"""Running an encoder for features: the one precision (autocast) helper every caller uses, and dense
features of PIL images."""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from PIL import Image

from .preprocess import Size, preprocess
from .vision_transformer import PEVisionTransformer

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` (a key of :data:`PRECISIONS`) on ``device``; fp32 runs as it is."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}', expected one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


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
    with torch.inference_mode(), autocast(device, precision):
        maps = encoder.dense_features_at(batch, layers)
    return [m.float().cpu() for m in maps]
