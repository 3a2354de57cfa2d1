"""Built-in data that needs no download."""

from .samples import SAMPLE_IMAGES, sample_image

__all__ = ["SAMPLE_IMAGES", "sample_image"]
