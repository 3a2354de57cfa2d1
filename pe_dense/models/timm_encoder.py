"""Any timm ViT as a pe_dense encoder (``timm:NAME``), for comparing PE with its peers (DINOv2, DINOv3,
SigLIP 2, CLIP, ...) under the same protocols (docs/comparison.md).

:class:`TimmEncoder` presents what :class:`~pe_dense.models.PEVisionTransformer` presents to the heads,
the tracker and the probe: dense maps (B, C, H/p, W/p) of chosen blocks (negative indices count from
the end), read through timm's own ``forward_intermediates`` with the prefix tokens (class, registers)
left out; the patch size, native size and the model's own mean and std come from its pretrained config
(``timm.data.resolve_data_config``). timm is imported only here, and only when a ``timm:`` model is asked
for.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch
import torch.nn as nn

from .checkpoint import CheckpointError, read_checkpoint
from .configs import UnknownModelError
from .hub import HUB_ALIASES, WeightsNotFoundError, resolve_weights
from .preprocess import Pixels

PREFIX = "timm:"
HUB_FILE = "model.safetensors"  # what timm's Hugging Face repos hold


def is_timm_name(model) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


@dataclass(frozen=True)
class TimmConfig:
    """What pe_dense reads of a timm ViT, under the names :class:`~pe_dense.models.PEVisionConfig` uses."""

    name: str  # timm:NAME
    width: int
    depth: int
    mlp_width: int  # the widest layer of a block's MLP
    patch_size: int
    image_size: int  # the pretrained config's input size (square)
    use_cls_token: bool
    prefix_tokens: int  # class token and registers, before the patch tokens
    pixels: Pixels
    parameters: int

    @property
    def timm_name(self) -> str:
        return self.name[len(PREFIX):]

    @property
    def pretrain_grid(self) -> int:
        return self.image_size // self.patch_size


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError("timm: models need timm (pip install 'pe_dense[timm]')") from None
    return timm


def _create(name: str, **kwargs) -> nn.Module:
    """The timm model ``timm:NAME`` with a dynamic image size (any multiple of the patch), checked to be a
    plain ViT whose blocks all see one token grid: the layout the heads and the probes read."""
    timm = _timm()
    arch = name[len(PREFIX):]
    if not arch or not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(PREFIX + c for c in close)}?" if close else ""
        raise UnknownModelError(f"unknown timm model '{arch}'.{hint} (timm.list_models() lists them)")
    try:
        model = timm.create_model(arch, num_classes=0, dynamic_img_size=True, **kwargs)
    except TypeError as e:
        if "dynamic_img_size" not in str(e):
            raise
        raise ValueError(f"{name} is not a plain ViT (one token grid through every block), which pe_dense reads: "
                         f"{type(e).__name__}: {e}") from None
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(f"{name} has no intermediate-feature API (forward_intermediates) in timm "
                         f"{timm.__version__}: its blocks' maps cannot be read")
    if not all(hasattr(model, a) for a in ("patch_embed", "blocks", "num_prefix_tokens", "embed_dim")):
        raise ValueError(f"{name} is not a plain ViT (patch embedding, blocks and prefix tokens), which pe_dense "
                         f"reads")
    return model


def _config(name: str, model: nn.Module) -> TimmConfig:
    timm = _timm()
    data = timm.data.resolve_data_config({}, model=model)
    patch = model.patch_embed.patch_size
    if patch[0] != patch[1] or data["input_size"][1] != data["input_size"][2]:
        raise ValueError(f"{name} has a non-square patch or input ({patch}, {data['input_size']}), which pe_dense "
                         f"does not read")
    mlp = getattr(model.blocks[0], "mlp", model.blocks[0])  # not attention's qkv, which is 3x the width
    mlp_width = max(m.out_features for m in mlp.modules() if isinstance(m, nn.Linear))
    return TimmConfig(name=name, width=model.embed_dim, depth=len(model.blocks), mlp_width=mlp_width,
                      patch_size=patch[0],
                      image_size=data["input_size"][1], use_cls_token=getattr(model, "cls_token", None) is not None,
                      prefix_tokens=model.num_prefix_tokens,
                      pixels=Pixels(tuple(data["mean"]), tuple(data["std"]), data["interpolation"]),
                      parameters=sum(p.numel() for p in model.parameters()))


def timm_config(name: str) -> TimmConfig:
    """The config of ``timm:NAME``, read off the model built without storage (no weights, no init)."""
    with torch.device("meta"):
        return _config(name, _create(name))


class TimmEncoder(nn.Module):
    """A timm ViT (under ``model``, with timm's parameter names) behind the PE encoder's interface."""

    def __init__(self, name: str, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = _config(name, model)

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def use_cls_token(self) -> bool:
        return self.config.use_cls_token

    @property
    def num_blocks(self) -> int:
        return len(self.model.blocks)

    @property
    def width(self) -> int:
        return self.config.width

    def layer_index(self, layer: int) -> int:
        """The block index ``layer`` means (negative counts from the end), or a ValueError if out of range."""
        n = self.num_blocks
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} is out of range for {self.config.name}, a {n}-block model "
                             f"(valid: {-n}..{n - 1})")
        return layer % n

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) of tokens for an input of this size; sizes must be multiples of the patch size
        (timm would silently drop the remainder)."""
        p = self.patch_size
        if height % p or width % p or height < p or width < p:
            raise ValueError(f"input size {height}x{width} is not a positive multiple of {self.config.name}'s patch "
                             f"size {p}; resize or pad the image")
        return height // p, width // p

    def truncate(self, layer: int) -> None:
        """Drop the blocks after ``layer`` (and the final norm and head, which no map goes through)."""
        self.model.prune_intermediate_layers([self.layer_index(layer)], prune_norm=True, prune_head=True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def dense_features_at(self, images: torch.Tensor, layers: Sequence[int] = (-1,), norm: bool = False,
                          return_cls_token: bool = False):
        """Dense maps (B, width, H/p, W/p) after each block in ``layers``, from timm's
        ``forward_intermediates``; with ``return_cls_token``, (map, class token (B, width)) pairs."""
        if return_cls_token and not self.use_cls_token:
            raise ValueError(f"{self.config.name} has no class token")
        wanted = [self.layer_index(i) for i in layers]
        if not wanted:
            raise ValueError("layers is empty")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        self.token_grid(images.shape[2], images.shape[3])
        maps = self.model.forward_intermediates(images, indices=sorted(set(wanted)), norm=norm, output_fmt="NCHW",
                                                intermediates_only=True, return_prefix_tokens=return_cls_token)
        found = dict(zip(sorted(set(wanted)), maps))
        if return_cls_token:  # the class token is the first prefix token
            return [(found[i][0], found[i][1][:, 0]) for i in wanted]
        return [found[i] for i in wanted]

    def dense_features(self, images: torch.Tensor, layer: int = -1, norm: bool = False) -> torch.Tensor:
        return self.dense_features_at(images, (layer,), norm=norm)[0]


def build_timm_encoder(name: str, weights: Union[None, str, os.PathLike] = None, **options) -> TimmEncoder:
    """``timm:NAME`` as an encoder, in eval mode. ``weights``: None for random weights, a checkpoint file
    (read without unpickling code; timm converts the original releases' layouts), ``"hub"`` for
    timm's released weights (the hub cache first, as for PE), or ``hf://repo:file``. ``options`` go to
    ``timm.create_model`` (e.g. ``drop_path_rate``)."""
    if weights is None:
        model = _create(name, **options)
    else:
        timm_config(name)  # the name and the layout, checked before any file is looked for
        path = weights_file(name, str(weights))
        # pe_dense reads the tensors (safetensors, or torch.load with weights_only), so nothing is unpickled
        # whatever timm's own loader does; timm then converts the layout. JAX .npz releases are numpy arrays.
        source = {"file": str(path)} if path.suffix == ".npz" else {"state_dict": read_checkpoint(path)}
        try:
            model = _create(name, pretrained=True, pretrained_cfg_overlay=source, **options)
        except (RuntimeError, KeyError) as e:  # what torch's and timm's loaders raise on a mismatch
            raise CheckpointError(f"{path} does not load into {name}: {str(e).splitlines()[0]}") from None
    return TimmEncoder(name, model).eval()


def weights_file(name: str, weights: str) -> Path:
    """The local file of ``weights`` for ``timm:NAME``: a path, hf://repo:file, or "hub" for timm's release."""
    if weights not in HUB_ALIASES:
        return resolve_weights(name, weights)
    with torch.device("meta"):
        source = _create(name).pretrained_cfg
    if not source.get("hf_hub_id"):
        raise WeightsNotFoundError(f"timm publishes {name}'s weights outside the Hugging Face hub: download them "
                                   f"and pass the file")
    return resolve_weights(name, f"hf://{source['hf_hub_id']}:{source.get('hf_hub_filename', HUB_FILE)}")


def checkpoint_state(encoder: nn.Module) -> dict:
    """The state dict a checkpoint file of ``encoder`` holds: timm's own names for a timm model."""
    return encoder.model.state_dict() if isinstance(encoder, TimmEncoder) else encoder.state_dict()

