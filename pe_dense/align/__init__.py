"""Spatial alignment (how PE-Spatial is made): losses so far; teachers and the trainer follow."""

from .losses import FeatureDistillation, cosine_distillation_loss, pairwise_similarity_loss

__all__ = ["FeatureDistillation", "cosine_distillation_loss", "pairwise_similarity_loss"]
