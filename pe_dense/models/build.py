"""``build_encoder``: a PE vision tower by name, or any timm ViT as ``timm:NAME``, with its weights."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from .checkpoint import load_weights
from .configs import PEVisionConfig, get_config
from .hub import resolve_weights
from .timm_encoder import TimmConfig, TimmEncoder, build_timm_encoder, is_timm_name, timm_config, weights_file
from .vision_transformer import PEVisionTransformer


class RandomWeightsWarning(UserWarning):
    """The encoder was built without weights: its features mean nothing."""


def encoder_config(model: str) -> Union[PEVisionConfig, TimmConfig]:
    """The config of a PE model by name, or of a timm ViT as ``timm:NAME``."""
    return timm_config(model) if is_timm_name(model) else get_config(model)


def encoder_weights_file(model: str, weights: Union[str, os.PathLike]) -> Path:
    """The local checkpoint file that ``weights`` (a path, "hub" or hf://repo:file) means for ``model``."""
    return weights_file(model, str(weights)) if is_timm_name(model) else resolve_weights(model, weights)


def build_encoder(
    model: Union[str, PEVisionConfig],
    weights: Union[None, str, os.PathLike, Mapping[str, torch.Tensor]] = None,
    *,
    strict: bool = True,
    prefix: Optional[str] = None,
    device: Union[None, str, torch.device] = None,
    **options,
) -> Union[PEVisionTransformer, TimmEncoder]:
    """Build a PE vision tower and load its weights; returned in eval mode.

    Args:
        model: a released model name (``pe_dense.list_models()``) or a config; ``timm:NAME`` for a timm ViT
            (:func:`~pe_dense.models.timm_encoder.build_timm_encoder`, which takes the same weights except
            state dicts; ``options`` go to ``timm.create_model``).
        weights: None for random weights (with a warning), a checkpoint path (official ``.pt``, timm
            layout or safetensors), ``"hub"`` for the released checkpoint (``$PE_DENSE_WEIGHTS`` folder
            first, then the Hugging Face hub), ``"hf://repo:file"``, or a state dict.
        strict: refuse checkpoints with missing or unexpected keys (shape mismatches always fail).
        prefix: key prefix of the vision tower when a checkpoint holds several towers.
        device: where to put the model.
        **options: build options of :class:`PEVisionTransformer` (keep_blocks, window_size, ...).
    """
    if is_timm_name(model):
        if isinstance(weights, Mapping) or prefix is not None:
            raise ValueError(f"{model}: weights are a file, 'hub' or hf://repo:file (no state dict or prefix)")
        encoder = build_timm_encoder(model, weights, **options)
    else:
        encoder = _build_pe(get_config(model) if isinstance(model, str) else model, weights, strict, prefix, options)
    if weights is None:
        warnings.warn(
            f"{encoder.config.name} was built with RANDOM weights: its features are meaningless. "
            f"Pass weights='hub' or weights='/path/to/checkpoint'.",
            RandomWeightsWarning,
            stacklevel=2,
        )
    return encoder.to(device).eval()


def _build_pe(config: PEVisionConfig, weights, strict: bool, prefix: Optional[str], options: dict
              ) -> PEVisionTransformer:
    # A strict load overwrites every parameter, so skip the random init (minutes for G) and allocate only.
    skip_init = weights is not None and strict
    with torch.device("meta") if skip_init else contextlib.nullcontext():
        encoder = PEVisionTransformer(config, **options)
    if skip_init:
        encoder.to_empty(device="cpu")
    if weights is not None:
        if not isinstance(weights, Mapping):
            weights = resolve_weights(config.name, weights)
        load_weights(encoder, weights, strict=strict, prefix=prefix)
    return encoder
