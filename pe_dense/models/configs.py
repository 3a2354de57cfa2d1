"""Named configurations of every released PE vision tower (docs/models.md)."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Literal, Optional, Union

from .preprocess import PE_PIXELS, Pixels


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
    def pretrain_grid(self) -> int:
        """Tokens per side of the pretraining grid: the grid of the position table."""
        return self.image_size // self.patch_size

    @property
    def pixels(self) -> Pixels:
        """The input normalisation every PE model was trained with."""
        return PE_PIXELS

    def replace(self, **changes) -> "PEVisionConfig":
        """A copy with some fields changed, e.g. ``config.replace(depth=2)`` for a shallow test model."""
        return dataclasses.replace(self, **changes)


def _core_config(**fields) -> PEVisionConfig:
    """A PE-Core tower: the family-constant fields (ln_post, CLIP attention pooling) filled in."""
    return PEVisionConfig(family="core", use_ln_post=True, pool="attn", **fields)


_CONFIGS = [
    _core_config(name="PE-Core-T16-384", patch_size=16, width=192, depth=12, heads=3, mlp_width=768, image_size=384,
                 use_cls_token=True, output_dim=512, timm_name="vit_pe_core_tiny_patch16_384"),
    _core_config(name="PE-Core-S16-384", patch_size=16, width=384, depth=12, heads=6, mlp_width=1536, image_size=384,
                 use_cls_token=True, output_dim=512, timm_name="vit_pe_core_small_patch16_384"),
    _core_config(name="PE-Core-B16-224", patch_size=16, width=768, depth=12, heads=12, mlp_width=3072, image_size=224,
                 use_cls_token=True, output_dim=1024, timm_name="vit_pe_core_base_patch16_224"),
    _core_config(name="PE-Core-L14-336", patch_size=14, width=1024, depth=24, heads=16, mlp_width=4096,
                 image_size=336, use_cls_token=True, output_dim=1024, timm_name="vit_pe_core_large_patch14_336"),
    _core_config(name="PE-Core-G14-448", patch_size=14, width=1536, depth=50, heads=16, mlp_width=8960,
                 image_size=448, use_cls_token=False, output_dim=1280, timm_name="vit_pe_core_gigantic_patch14_448"),
    PEVisionConfig(name="PE-Lang-L14-448", family="lang", patch_size=14, width=1024, depth=23, heads=16,
                   mlp_width=4096, image_size=448, use_cls_token=True, ls_init_value=0.1,
                   timm_name="vit_pe_lang_large_patch14_448"),
    PEVisionConfig(name="PE-Lang-G14-448", family="lang", patch_size=14, width=1536, depth=47, heads=16,
                   mlp_width=8960, image_size=448, use_cls_token=False, ls_init_value=0.1,
                   timm_name="vit_pe_lang_gigantic_patch14_448"),
    PEVisionConfig(name="PE-Spatial-T16-512", family="spatial", patch_size=16, width=192, depth=12, heads=3,
                   mlp_width=768, image_size=512, use_cls_token=True, timm_name="vit_pe_spatial_tiny_patch16_512"),
    PEVisionConfig(name="PE-Spatial-S16-512", family="spatial", patch_size=16, width=384, depth=12, heads=6,
                   mlp_width=1536, image_size=512, use_cls_token=True, timm_name="vit_pe_spatial_small_patch16_512"),
    PEVisionConfig(name="PE-Spatial-B16-512", family="spatial", patch_size=16, width=768, depth=12, heads=12,
                   mlp_width=3072, image_size=512, use_cls_token=True, timm_name="vit_pe_spatial_base_patch16_512"),
    PEVisionConfig(name="PE-Spatial-L14-448", family="spatial", patch_size=14, width=1024, depth=24, heads=16,
                   mlp_width=4096, image_size=448, use_cls_token=True, timm_name="vit_pe_spatial_large_patch14_448"),
    PEVisionConfig(name="PE-Spatial-G14-448", family="spatial", patch_size=14, width=1536, depth=50, heads=16,
                   mlp_width=8960, image_size=448, use_cls_token=False, ls_init_value=0.1,
                   timm_name="vit_pe_spatial_gigantic_patch14_448"),
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


# The four stage-end blocks of the released PE-G detectors (global attention there, windows elsewhere).
RELEASED_G_STAGE_ENDS = (12, 24, 36, 49)


def stage_end_blocks(model: Union[str, PEVisionConfig]) -> tuple[int, int, int, int]:
    """The last block of each of a model's four stages: ViTDet's global-attention blocks in detection,
    and the blocks whose maps feed the four scales of segmentation and depth heads.

    The 50-block G towers use the released PE detectors' blocks, ``RELEASED_G_STAGE_ENDS`` =
    (12, 24, 36, 49); other depths are split evenly, as ViTDet does: (2, 5, 8, 11) for 12 blocks,
    (5, 11, 17, 23) for 24.
    """
    depth = (get_config(model) if isinstance(model, str) else model).depth
    if depth == 50:
        return RELEASED_G_STAGE_ENDS
    if depth < 4:
        raise ValueError(f"a {depth}-block model has no four stages")
    return tuple((i + 1) * depth // 4 - 1 for i in range(4))
