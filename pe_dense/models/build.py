"""``build_encoder``: a PE vision tower by name, with its weights."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Mapping, Optional, Union

import torch

from .checkpoint import load_weights
from .configs import PEVisionConfig, get_config
from .hub import resolve_weights
from .vision_transformer import PEVisionTransformer


class RandomWeightsWarning(UserWarning):
    """The encoder was built without weights: its features mean nothing."""


def build_encoder(
    model: Union[str, PEVisionConfig],
    weights: Union[None, str, os.PathLike, Mapping[str, torch.Tensor]] = None,
    *,
    strict: bool = True,
    prefix: Optional[str] = None,
    device: Union[None, str, torch.device] = None,
    **options,
) -> PEVisionTransformer:
    """Build a PE vision tower and load its weights; returned in eval mode.

    Args:
        model: a released model name (``pe_dense.list_models()``) or a config.
        weights: None for random weights (with a warning), a checkpoint path (official ``.pt``, timm
            layout or safetensors), ``"hub"`` for the released checkpoint (``$PE_DENSE_WEIGHTS`` folder
            first, then the Hugging Face hub), ``"hf://repo:file"``, or a state dict.
        strict: refuse checkpoints with missing or unexpected keys (shape mismatches always fail).
        prefix: key prefix of the vision tower when a checkpoint holds several towers.
        device: where to put the model.
        **options: build options of :class:`PEVisionTransformer` (keep_blocks, window_size, ...).
    """
    config = get_config(model) if isinstance(model, str) else model
    # A strict load overwrites every parameter, so skip the random init (minutes for G) and allocate only.
    skip_init = weights is not None and strict
    with torch.device("meta") if skip_init else contextlib.nullcontext():
        encoder = PEVisionTransformer(config, **options)
    if skip_init:
        encoder.to_empty(device="cpu")
    if weights is None:
        warnings.warn(
            f"{config.name} was built with RANDOM weights: its features are meaningless. "
            f"Pass weights='hub' or weights='/path/to/{config.name}.pt'.",
            RandomWeightsWarning,
            stacklevel=2,
        )
    else:
        if not isinstance(weights, Mapping):
            weights = resolve_weights(config.name, weights)
        load_weights(encoder, weights, strict=strict, prefix=prefix)
    return encoder.to(device).eval()
