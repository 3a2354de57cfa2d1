"""Sample photographs shipped inside scikit-image, usable offline for demos and tests."""

from __future__ import annotations

from PIL import Image

SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee")


def sample_image(name: str) -> Image.Image:
    """One of :data:`SAMPLE_IMAGES` as an RGB PIL image."""
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image '{name}', expected one of {', '.join(SAMPLE_IMAGES)}")
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
