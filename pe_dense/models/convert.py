"""Lossless conversion of PE vision state dicts between the official layout and timm's ``vit_pe_*`` layout,
and the patch-size conversion used by the detection backbones.

Official keys (docs/checkpoints.md) are pe_dense's own parameter names. timm renames them, reshapes
the class token and position table, splits the pooling head's packed in-projection into q and kv
and stores ``proj`` transposed as ``head.weight`` with a zero ``head.bias``.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

# (official, timm) name fragments inside transformer block i (official "transformer.resblocks.i.", timm "blocks.i.")
_BLOCK_NAMES = [
    ("ln_1.", "norm1."),
    ("ln_2.", "norm2."),
    ("attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.out_proj.", "attn.proj."),
    ("ls_1.gamma", "gamma_1"),
    ("ls_2.gamma", "gamma_2"),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
]
# (official, timm) prefixes outside the blocks whose tensors are kept as they are
_TOP_NAMES = [
    ("conv1.weight", "patch_embed.proj.weight"),
    ("ln_pre.", "norm_pre."),
    ("ln_post.", "norm."),
    ("attn_pool.attn.out_proj.", "attn_pool.proj."),
    ("attn_pool.layernorm.", "attn_pool.norm."),
    ("attn_pool.mlp.c_fc.", "attn_pool.mlp.fc1."),
    ("attn_pool.mlp.c_proj.", "attn_pool.mlp.fc2."),
    ("attn_pool.probe", "attn_pool.latent"),
]
_OFFICIAL_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_TIMM_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


class ConversionError(ValueError):
    """A state dict entry that has no counterpart in the other layout."""


def _rename(rest: str, pairs, src: int, key: str) -> str:
    for pair in pairs:
        if rest.startswith(pair[src]):
            return pair[1 - src] + rest[len(pair[src]):]
    raise ConversionError(f"no conversion known for key '{key}'")


def official_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official PE vision keys (no prefix) to timm ``vit_pe_*`` keys."""
    out = {}
    for key, value in state.items():
        block = _OFFICIAL_BLOCK.fullmatch(key)
        if block:
            out[f"blocks.{block[1]}." + _rename(block[2], _BLOCK_NAMES, 0, key)] = value
        elif key == "class_embedding":
            out["cls_token"] = value.reshape(1, 1, -1)
        elif key == "positional_embedding":
            out["pos_embed"] = value.reshape(1, -1, value.shape[-1])
        elif key == "proj":
            out["head.weight"] = value.t()
            out["head.bias"] = value.new_zeros(value.shape[1])
        elif key.startswith("attn_pool.attn.in_proj_"):
            kind = key.rsplit("_", 1)[1]  # weight or bias
            q, kv = value.split([value.shape[0] // 3, 2 * value.shape[0] // 3])
            out[f"attn_pool.q.{kind}"], out[f"attn_pool.kv.{kind}"] = q, kv
        else:
            out[_rename(key, _TOP_NAMES, 0, key)] = value
    return out


def timm_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``vit_pe_*`` keys to official PE vision keys (the inverse of :func:`official_to_timm`)."""
    out = {}
    for key, value in state.items():
        block = _TIMM_BLOCK.fullmatch(key)
        if block:
            out[f"transformer.resblocks.{block[1]}." + _rename(block[2], _BLOCK_NAMES, 1, key)] = value
        elif key == "cls_token":
            out["class_embedding"] = value.reshape(-1)
        elif key == "pos_embed":
            out["positional_embedding"] = value.reshape(-1, value.shape[-1])
        elif key == "head.weight":
            out["proj"] = value.t()
        elif key == "head.bias":
            if torch.count_nonzero(value):
                raise ConversionError("head.bias is not zero: the official PE projection has no bias")
        elif key in ("attn_pool.q.weight", "attn_pool.q.bias"):
            kind = key.rsplit(".", 1)[1]
            kv_key = f"attn_pool.kv.{kind}"
            if kv_key not in state:
                raise ConversionError(f"'{key}' has no matching '{kv_key}'")
            out[f"attn_pool.attn.in_proj_{kind}"] = torch.cat([value, state[kv_key]])
        elif key.startswith("attn_pool.kv."):
            if key.replace(".kv.", ".q.") not in state:
                raise ConversionError(f"'{key}' has no matching q projection")
        else:
            out[_rename(key, _TOP_NAMES, 1, key)] = value
    return out


def resize_patch_embed(weight: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Resize a (width, 3, p, p) patch kernel to another patch size, bicubically
    (docs/detection.md#vitdet-mask-r-cnn)."""
    resized = F.interpolate(weight.float(), size=(patch_size, patch_size), mode="bicubic", align_corners=False)
    return resized.to(weight.dtype)
