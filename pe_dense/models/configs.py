"""Named configurations of every released PE vision tower (pe_reference.md §2)."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class PEVisionConfig:
    """Architecture of one PE vision tower. Everything a checkpoint's shapes depend on lives here."""

    name: str
    family: Literal["core", "lang", "spatial"]
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_width: int
    image_size: int  # pretraining resolution: the position table covers image_size // patch_size squared
    use_cls_token: bool
    ls_init_value: Optional[float] = None  # layerscale gamma init; None means no layerscale
    use_ln_post: bool = False
    pool: Optional[Literal["attn"]] = None  # attention pooling (CLIP head), Core only
    output_dim: Optional[int] = None  # width of the `proj` matrix after pooling
    attn_pool_heads: int = 8
    timm_name: Optional[str] = None  # the matching timm `vit_pe_*` architecture

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"{self.name}: width {self.width} is not divisible by heads {self.heads}")
        if (self.width // self.heads) % 4:
            raise ValueError(f"{self.name}: head dim {self.width // self.heads} must be a multiple of 4 for 2D RoPE")
        if self.image_size % self.patch_size:
            raise ValueError(f"{self.name}: image size {self.image_size} is not a multiple of patch {self.patch_size}")
        if (self.pool is None) != (self.output_dim is None):
            raise ValueError(f"{self.name}: pool and output_dim go together")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def grid_size(self) -> int:
        """Side of the pretraining token grid (the position table's grid)."""
        return self.image_size // self.patch_size

    def replace(self, **changes) -> "PEVisionConfig":
        """A copy with some fields changed, e.g. ``config.replace(depth=2)`` for a shallow test model."""
        return dataclasses.replace(self, **changes)


def _core(name, patch, width, depth, heads, mlp, image, cls, out, timm):
    return PEVisionConfig(name, "core", patch, width, depth, heads, mlp, image, cls, None, True, "attn", out,
                          timm_name=timm)


def _dense(name, family, patch, width, depth, heads, mlp, image, cls, ls, timm):
    return PEVisionConfig(name, family, patch, width, depth, heads, mlp, image, cls, ls, False, None, None,
                          timm_name=timm)


_CONFIGS = [
    _core("PE-Core-T16-384", 16, 192, 12, 3, 768, 384, True, 512, "vit_pe_core_tiny_patch16_384"),
    _core("PE-Core-S16-384", 16, 384, 12, 6, 1536, 384, True, 512, "vit_pe_core_small_patch16_384"),
    _core("PE-Core-B16-224", 16, 768, 12, 12, 3072, 224, True, 1024, "vit_pe_core_base_patch16_224"),
    _core("PE-Core-L14-336", 14, 1024, 24, 16, 4096, 336, True, 1024, "vit_pe_core_large_patch14_336"),
    _core("PE-Core-G14-448", 14, 1536, 50, 16, 8960, 448, False, 1280, "vit_pe_core_gigantic_patch14_448"),
    _dense("PE-Lang-L14-448", "lang", 14, 1024, 23, 16, 4096, 448, True, 0.1, "vit_pe_lang_large_patch14_448"),
    _dense("PE-Lang-G14-448", "lang", 14, 1536, 47, 16, 8960, 448, False, 0.1, "vit_pe_lang_gigantic_patch14_448"),
    _dense("PE-Spatial-T16-512", "spatial", 16, 192, 12, 3, 768, 512, True, None, "vit_pe_spatial_tiny_patch16_512"),
    _dense("PE-Spatial-S16-512", "spatial", 16, 384, 12, 6, 1536, 512, True, None, "vit_pe_spatial_small_patch16_512"),
    _dense("PE-Spatial-B16-512", "spatial", 16, 768, 12, 12, 3072, 512, True, None, "vit_pe_spatial_base_patch16_512"),
    _dense("PE-Spatial-L14-448", "spatial", 14, 1024, 24, 16, 4096, 448, True, None,
           "vit_pe_spatial_large_patch14_448"),
    _dense("PE-Spatial-G14-448", "spatial", 14, 1536, 50, 16, 8960, 448, False, 0.1,
           "vit_pe_spatial_gigantic_patch14_448"),
]
MODEL_CONFIGS: dict[str, PEVisionConfig] = {c.name: c for c in _CONFIGS}
# The -Tiling Lang checkpoints were trained with image tiling but share the Lang architectures.
for _base in ("PE-Lang-L14-448", "PE-Lang-G14-448"):
    MODEL_CONFIGS[_base + "-Tiling"] = MODEL_CONFIGS[_base].replace(name=_base + "-Tiling")


def list_models(family: Optional[str] = None) -> list[str]:
    """Names accepted by :func:`get_config` and ``build_encoder``, optionally of one family."""
    return [n for n, c in MODEL_CONFIGS.items() if family is None or c.family == family]


class UnknownModelError(ValueError):
    """A model name that is not one of the released PE vision towers."""


def get_config(name: str) -> PEVisionConfig:
    """The config of a released model by name; unknown names get a suggestion."""
    if name in MODEL_CONFIGS:
        return MODEL_CONFIGS[name]
    close = difflib.get_close_matches(name, MODEL_CONFIGS, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown PE model '{name}'.{hint} Known models: {', '.join(MODEL_CONFIGS)}")
