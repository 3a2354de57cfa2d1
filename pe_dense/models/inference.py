"""Running an encoder for features: the one precision (autocast) helper every caller uses, and dense
features of PIL images."""

from __future__ import annotations

import contextlib
import copy
from typing import Optional, Sequence

import torch
import torch.nn as nn
from PIL import Image

from .. import cpu
from .preprocess import Size, preprocess
from .shift_stitch import shift_and_stitch
from .vision_transformer import PEVisionTransformer, SelfAttention

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(device: torch.device | str, precision: str) -> None:
    """Refuse a precision that would make a run slower instead of faster: fp16 on a CPU (no fast fp16
    matrix products there), bf16 on a CPU without native bf16."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}', expected one of {', '.join(PRECISIONS)}")
    if torch.device(device).type != "cpu" or precision == "fp32":
        return
    if precision == "fp16":
        raise ValueError("fp16 is not supported on the CPU (its matrix products are emulated and slow); use bf16 "
                         "on a CPU with native bf16, or fp32")
    if not cpu.native_bf16(cpu.units()):
        raise ValueError("this CPU has no native bf16 arithmetic (AVX512-BF16 or AMX), so bf16 would be slower than "
                         "fp32; use fp32")


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` (a key of :data:`PRECISIONS`) on ``device``; fp32 runs as it is."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}', expected one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def with_matmul_weights_in(encoder: PEVisionTransformer, dtype: torch.dtype) -> PEVisionTransformer:
    """A copy of ``encoder`` whose matrix-product weights (linear layers, the packed attention projection,
    the patch embedding) are stored in ``dtype``, for repeated calls under autocast to ``dtype``.

    Autocast casts these weights again on every call, which costs 2-3 % of a 480p frame on a CPU
    (benchmarks/tracking.py); the copy holds the cast weights, so autocast finds nothing to cast. Norms
    and embeddings stay float32: under autocast the copy computes exactly what ``encoder`` does.
    """
    converted = copy.deepcopy(encoder)
    for module in converted.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, SelfAttention)):
            for parameter in module.parameters(recurse=False):
                parameter.data = parameter.data.to(dtype)
    return converted


def extract(
    encoder: PEVisionTransformer,
    images: Sequence[Image.Image],
    *,
    size: Size,
    layer: int = -1,
    precision: str = "fp32",
    stride: Optional[int] = None,
) -> torch.Tensor:
    """Dense features (B, C, h, w), float32 on the CPU, of a batch of PIL images resized to ``size``."""
    return extract_layers(encoder, images, size=size, layers=(layer,), precision=precision, stride=stride)[0]


def extract_layers(
    encoder: PEVisionTransformer,
    images: Sequence[Image.Image],
    *,
    size: Size,
    layers: Sequence[int],
    precision: str = "fp32",
    stride: Optional[int] = None,
) -> list[torch.Tensor]:
    """Dense features (B, C, h, w) after each block in ``layers``, from one forward pass.

    ``stride`` (pixels, a divisor of the patch size) gives a denser grid by shift-and-stitch: (patch /
    stride)**2 shifted passes in one batch (:mod:`.shift_stitch`); None is one token per patch.
    """
    device = next(encoder.parameters()).device
    batch = torch.stack([preprocess(image, size, encoder.config.pixels) for image in images]).to(device)
    with torch.inference_mode(), autocast(device, precision):
        maps = shift_and_stitch(encoder, batch, stride or encoder.patch_size, layers)
    return [m.float().cpu() for m in maps]
