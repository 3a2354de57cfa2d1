"""Input images named on a command line: files, folders and ``sample:NAME`` built-in images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

from PIL import Image

from ..models.preprocess import load_image
from .samples import SAMPLE_IMAGES, sample_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SAMPLE_PREFIX = "sample:"


def list_images(folder: Union[str, os.PathLike]) -> list[Path]:
    """Image files of a folder in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass(frozen=True)
class ImageSource:
    """An input image: a name for its outputs and a way to load it."""

    name: str
    load: Callable[[], Image.Image]


def find_images(specs: Sequence[str]) -> list[ImageSource]:
    """Expand image arguments: files, folders (their images, sorted) and ``sample:NAME`` built-in images.

    Every argument is checked before anything runs; output names are made unique.
    """
    sources = []
    for spec in specs:
        if spec.startswith(SAMPLE_PREFIX):
            name = spec[len(SAMPLE_PREFIX):]
            if name not in SAMPLE_IMAGES:
                raise ValueError(f"unknown sample image '{name}', expected one of {', '.join(SAMPLE_IMAGES)}")
            sources.append(ImageSource(name, lambda n=name: sample_image(n)))
            continue
        path = Path(spec)
        if path.is_dir():
            files = list_images(path)
            if not files:
                raise ValueError(f"folder '{path}' has no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"image '{spec}' does not exist")
        sources += [ImageSource(p.stem, lambda p=p: load_image(p)) for p in files]
    return _unique_names(sources)


def _unique_names(sources: list[ImageSource]) -> list[ImageSource]:
    seen: dict[str, int] = {}
    unique = []
    for source in sources:
        count = seen.get(source.name, 0)
        seen[source.name] = count + 1
        unique.append(source if count == 0 else ImageSource(f"{source.name}_{count}", source.load))
    return unique
