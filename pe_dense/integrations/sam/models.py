"""SAM (segment-anything, ViT-B/L/H) and SAM 2.1 (sam2, Hiera T/S/B+/L) behind one small interface:
encode a batch of square images once (with the decoder's image-only work), then decode any number of
single-point prompts per image in one decoder call (:mod:`.decoder`), returning low-resolution mask logits.

Both libraries are optional imports, loaded only when a model of theirs is built.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F

from ...models.checkpoint import CheckpointError, compare, read_checkpoint
from .decoder import decode_points, image_context, prompt_bytes, select_masks

# (embed dim, depth, heads, global attention blocks) as segment-anything's build_sam.py
SAM_ARCHS = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
SAM2_ARCHS = {
    "hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
SAM_FAMILIES = {"segment_anything": SAM_ARCHS, "sam2": SAM2_ARCHS}
SamFamily = Literal["segment_anything", "sam2"]
MASK_CHOICES = ("single", "best")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PromptableSegmenter(torch.nn.Module):
    """A SAM-family model that encodes square RGB images in [0, 1] at ``image_size`` and decodes
    single positive points given in that input's pixel coordinates."""

    family: str
    image_size: int

    prompt_encoder: torch.nn.Module  # the library's PromptEncoder and MaskDecoder
    mask_decoder: torch.nn.Module

    def encode(self, images: torch.Tensor) -> dict:
        raise NotImplementedError

    def decode(self, state: dict, index: int, points: torch.Tensor, multimask: bool):
        """Mask logits (K, M, h, w) and predicted IoUs (K, M) of image ``index`` for K points (K, 2), as
        the library's mask decoder returns them."""
        masks, iou = decode_points(self.prompt_encoder, self.mask_decoder, state, index, points)
        return select_masks(self.mask_decoder, masks, iou, multimask)

    def point_bytes(self, state: dict) -> int:
        """Bytes of the largest tensor that each prompt adds to a decoder call."""
        return prompt_bytes(state)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"expected square RGB images (B, 3, S, S), got {tuple(images.shape)}")
        if images.shape[-1] == self.image_size:
            return images
        return F.interpolate(images, size=(self.image_size,) * 2, mode="bilinear", align_corners=False,
                             antialias=True)


class SegmentAnything(PromptableSegmenter):
    """segment-anything's ``Sam``; the input is already square, so SAM's longest-side resize needs no padding."""

    family = "segment_anything"

    def __init__(self, sam):
        super().__init__()
        self.sam = sam
        self.image_size = sam.image_encoder.img_size

    @property
    def prompt_encoder(self):
        return self.sam.prompt_encoder

    @property
    def mask_decoder(self):
        return self.sam.mask_decoder

    def encode(self, images):
        x = self._resize(images) * 255.0
        x = (x - self.sam.pixel_mean) / self.sam.pixel_std
        return image_context(self.prompt_encoder, self.mask_decoder, self.sam.image_encoder(x))


class SAM2(PromptableSegmenter):
    """sam2's ``SAM2Base`` used on still images, as ``SAM2ImagePredictor`` does."""

    family = "sam2"

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.image_size = model.image_size
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(3, 1, 1), persistent=False)

    @property
    def prompt_encoder(self):
        return self.model.sam_prompt_encoder

    @property
    def mask_decoder(self):
        return self.model.sam_mask_decoder

    def encode(self, images):
        x = (self._resize(images) - self.mean) / self.std
        _, feats, _, sizes = self.model._prepare_backbone_features(self.model.forward_image(x))
        if self.model.directly_add_no_mem_embed:
            feats[-1] = feats[-1] + self.model.no_mem_embed
        maps = [f.permute(1, 2, 0).reshape(f.shape[1], f.shape[2], *size) for f, size in zip(feats, sizes)]
        return image_context(self.prompt_encoder, self.mask_decoder, maps[-1], high_res=maps[:-1])

    def decode(self, state, index, points, multimask):
        logits, iou = super().decode(state, index, points, multimask)
        return logits.clamp(-32.0, 32.0), iou  # as SAM2ImagePredictor clamps its low-resolution logits


def _load_sam_weights(module: torch.nn.Module, checkpoint: Union[str, os.PathLike], what: str) -> None:
    state = read_checkpoint(checkpoint)  # also unwraps sam2's {"model": ...}
    report = compare(state, module)
    if not report.ok:
        hint = "\n  (released SAM weights are for image_size 1024)" if report.mismatched else ""
        raise CheckpointError(f"{checkpoint} does not fit {what}:\n{report}{hint}")
    module.load_state_dict(state)


def _build_segment_anything(arch: str, image_size: int):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    width, depth, heads, global_blocks = SAM_ARCHS[arch]
    embed = 256
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=width, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=16, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=global_blocks, window_size=14, out_chans=embed,
        ),
        prompt_encoder=PromptEncoder(embed_dim=embed, image_embedding_size=(image_size // 16,) * 2,
                                     input_image_size=(image_size,) * 2, mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=embed, mlp_dim=2048, num_heads=8),
            transformer_dim=embed, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    )


def _build_sam2(arch: str, image_size: int):
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if not GlobalHydra.instance().is_initialized():  # importing sam2 initialises it; someone may have cleared it
        from hydra import initialize_config_module

        initialize_config_module("sam2", version_base="1.2")
    # The same overrides as sam2's build_sam2: fall back to multimask output when the single mask is unstable.
    overrides = [
        f"++model.image_size={image_size}",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    ]
    cfg = compose(config_name=SAM2_ARCHS[arch], overrides=overrides)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def build_segmenter(
    family: SamFamily,
    arch: str,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    image_size: int = 1024,
    device: Union[str, torch.device] = "cpu",
) -> PromptableSegmenter:
    """A frozen SAM-family model in eval mode.

    Args:
        family: "segment_anything" (SAM: vit_b, vit_l, vit_h) or "sam2" (SAM 2.1: hiera_t, hiera_s,
            hiera_b+, hiera_l).
        arch: the architecture within the family.
        checkpoint: the released weights (``sam_vit_b_01ec64.pth``, ``sam2.1_hiera_large.pt``, ...),
            read without unpickling code; None gives random weights (tests, demos).
        image_size: input side; the released weights are for 1024. Smaller sizes are for tests and demos.
    """
    if family not in SAM_FAMILIES:
        raise ValueError(f"unknown SAM family '{family}' (known: {', '.join(SAM_FAMILIES)})")
    if arch not in SAM_FAMILIES[family]:
        raise ValueError(f"unknown {family} architecture '{arch}' (known: {', '.join(SAM_FAMILIES[family])})")
    stride = 16 if family == "segment_anything" else 32
    if image_size < stride or image_size % stride:
        raise ValueError(f"{family} image_size must be a positive multiple of {stride}, got {image_size}")
    if family == "segment_anything":
        try:
            import segment_anything  # noqa: F401
        except ImportError as e:
            raise ImportError("the SAM teacher needs segment-anything: pip install segment-anything") from e
        segmenter = SegmentAnything(_build_segment_anything(arch, image_size))
        inner = segmenter.sam
    else:
        try:
            import sam2  # noqa: F401  (importing it registers its configs with hydra)
        except ImportError as e:
            raise ImportError("the SAM 2.1 teacher needs sam2: pip install sam2") from e
        segmenter = SAM2(_build_sam2(arch, image_size))
        inner = segmenter.model
    if checkpoint is not None:
        _load_sam_weights(inner, checkpoint, f"{family} {arch} at image_size {image_size}")
    return segmenter.to(device).eval().requires_grad_(False)
