"""Pictures of feature maps."""

from .pca import PCAColorizer, colors_to_image, pca_rgb

__all__ = ["PCAColorizer", "colors_to_image", "pca_rgb"]
