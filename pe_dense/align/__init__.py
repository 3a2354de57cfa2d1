"""Spatial alignment (how PE-Spatial is made, docs/alignment.md): teachers, losses, data and the
trainer behind tools/align_net.py."""

from .config import AlignConfig, AlignConfigError, load_config
from .losses import FeatureDistillation, cosine_distillation_loss, pairwise_similarity_loss
from .teachers import FeatureTeacher, SAMCorrespondenceTeacher, default_teacher_layer

__all__ = [
    "AlignConfig", "AlignConfigError", "FeatureDistillation", "FeatureTeacher", "SAMCorrespondenceTeacher",
    "cosine_distillation_loss", "default_teacher_layer", "load_config", "pairwise_similarity_loss",
]
