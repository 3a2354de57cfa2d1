"""Label maps as indexed (palette) PNGs, the way DAVIS annotations and pe_dense's label outputs
are stored: reading (with the checks that tell a label map from a soft or lossy mask) and writing."""

from __future__ import annotations

import os
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..atomic_files import atomic_output

PathLike = Union[str, os.PathLike]


def davis_palette() -> np.ndarray:
    """(256, 3) uint8: the PASCAL VOC colour map that DAVIS annotations use (0 black, 1 red, ...)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        palette[i] = rgb
    return palette


MAX_SOFT_LEVELS = 32  # more distinct grey levels or colours than this: a soft or lossy mask, not labels


def read_label_png(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(labels (H, W) uint8, palette (N, 3) uint8) from a label image.

    - Indexed PNGs (as DAVIS ships them) keep their values and palette; every value must have a
      palette entry.
    - Greyscale, 1-bit and 16-bit images: two values are a binary mask (non-zero = object 1); more are
      label ids, renumbered 1..N in increasing order where they exceed 255 (e.g. 0/1000/2000).
    - RGB images give one label per distinct non-black colour.

    Refused, with the reason: JPEG masks (lossy compression invents values at every edge), more than
    255 objects, and greyscale or colour masks with more than :data:`MAX_SOFT_LEVELS` values, which
    are soft (anti-aliased or resampled edges) rather than label ids: use an indexed PNG for more.
    """
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise FileNotFoundError(f"mask '{path}' does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read mask '{path}' ({e})") from None
    if image.format == "JPEG":
        raise ValueError(f"mask '{path}' is a JPEG: lossy compression changes the values at every edge; save "
                         "masks as PNG")
    if image.mode == "P":
        labels = np.asarray(image, dtype=np.uint8)
        palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        if labels.max() >= len(palette):
            missing = sorted(int(v) for v in np.unique(labels[labels >= len(palette)]))
            raise ValueError(f"mask '{path}' uses labels {missing} that its palette ({len(palette)} colours) "
                             "does not define")
        return labels, palette
    if image.mode in ("1", "L", "I;16", "I"):
        values = np.asarray(image)
        present, inverse = np.unique(values, return_inverse=True)
        if len(present) <= 2:  # binary (0/255, 0/1, 0/65535...)
            return (values > 0).astype(np.uint8), davis_palette()
        objects = len(present) - int(present[0] == 0)
        if objects > 255:
            raise ValueError(f"mask '{path}' has {objects} label values besides the background: more objects than "
                             "a label PNG holds (255)")
        if len(present) > MAX_SOFT_LEVELS:
            raise ValueError(f"mask '{path}' has {len(present)} grey levels: an anti-aliased or resampled binary "
                             "mask, not label ids; threshold it (e.g. values > 127) or save an indexed PNG")
        if present.max() <= 255:
            return values.astype(np.uint8), davis_palette()
        rank = np.arange(len(present)) + (0 if present[0] == 0 else 1)  # keep 0 as the background
        return rank[inverse.reshape(values.shape)].astype(np.uint8), davis_palette()
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        colors, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
        black = np.flatnonzero((colors == 0).all(axis=1))
        if len(colors) > MAX_SOFT_LEVELS:
            raise ValueError(f"mask '{path}' has {len(colors)} colours: a photo or an anti-aliased drawing, not a "
                             "label mask; save one flat colour per object as PNG")
        order = np.concatenate([black, np.setdiff1d(np.arange(len(colors)), black)])
        rank = np.empty(len(colors), dtype=np.uint8)
        rank[order] = np.arange(len(colors))
        palette = colors[order] if len(black) else np.concatenate([[[0, 0, 0]], colors[order]]).astype(np.uint8)
        labels = rank[inverse.reshape(rgb.shape[:2])] + (0 if len(black) else 1)
        return labels.astype(np.uint8), palette
    raise ValueError(f"mask '{path}' has image mode {image.mode}; use an indexed PNG or a binary mask")


def write_label_png(path: PathLike, labels: np.ndarray, palette: np.ndarray) -> None:
    """Write ``labels`` (H, W) as an indexed PNG with ``palette``, atomically."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(palette, dtype=np.uint8).flatten().tolist())
    with atomic_output(path) as tmp:
        image.save(tmp)
