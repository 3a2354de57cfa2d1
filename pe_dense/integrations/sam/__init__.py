"""SAM and SAM 2.1 behind one interface: the locality teacher of spatial alignment and the box/point
prompts of ``pe-dense track``. segment-anything and sam2 are imported only when a model is built."""

from .models import MASK_CHOICES, SAM2_ARCHS, SAM_ARCHS, SAM_FAMILIES, PromptableSegmenter, build_segmenter
from .prompts import load_sam, mask_from_prompts

__all__ = ["MASK_CHOICES", "PromptableSegmenter", "SAM2_ARCHS", "SAM_ARCHS", "SAM_FAMILIES", "build_segmenter",
           "load_sam", "mask_from_prompts"]
