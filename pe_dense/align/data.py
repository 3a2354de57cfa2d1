"""Training images for alignment: any folder tree of images (SA-1B's ``sa_*/sa_*.jpg`` included),
read as square crops in [0, 1], in an endless, resumable, per-process order.

Randomness is a function of (seed, epoch, image index) only, so a run gives the same batches
whatever the number of loader workers and after a resume.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..data.image_sources import IMAGE_SUFFIXES

BUILTIN_SPLIT, BUILTIN_IMAGES, BUILTIN_SEED = "align", 256, 7
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def find_image_files(root: Union[str, os.PathLike]) -> list[str]:
    """Paths relative to ``root`` of every image below it, sorted (other files, e.g. SA-1B's JSON, are ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files


def builtin_image_folder() -> Path:
    """A folder of 256 synthetic shapes images (generated on first use under the built-in datasets' root), the
    demo's training data."""
    from ..data.generated import datasets_root
    from ..data.shapes import ensure_shapes_split

    root = datasets_root() / "shapes"
    ensure_shapes_split(root, BUILTIN_SPLIT, num_images=BUILTIN_IMAGES, seed=BUILTIN_SEED)
    return root / BUILTIN_SPLIT


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash((seed, epoch, index)) & (2**63 - 1))


class ImageFolder(Dataset):
    """Square ``size`` x ``size`` crops in [0, 1] of a folder's images; items are (epoch, index).

    An unreadable image gives ``{"error": ...}`` instead of failing: :func:`collate` drops it and
    reports it, so one bad file in a million does not stop a run.

    Args:
        augment: "resize" squashes the whole image (PE's preprocessing); "center_crop" takes the
            central square; "random_resized_crop" takes a random crop of ``min_scale``..1 of the area
            with aspect 3/4..4/3.
        hflip: mirror half of the crops at random.
    """

    def __init__(self, root: Union[str, os.PathLike], size: int, augment: str = "resize", min_scale: float = 0.4,
                 hflip: bool = False, seed: int = 0):
        self.root = Path(root)
        self.files = find_image_files(root)
        self.size, self.augment, self.min_scale, self.hflip, self.seed = size, augment, min_scale, hflip, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        epoch, index = item
        path = self.root / self.files[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except _UNREADABLE as e:
            return {"error": f"{path}: {e}"}
        generator = sample_generator(self.seed, epoch, index)
        box = self._crop_box(image.width, image.height, generator)
        image = image.resize((self.size, self.size), Image.BILINEAR, box=box)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.hflip and torch.rand((), generator=generator) < 0.5:
            pixels = pixels.flip(-1)
        return {"image": pixels, "key": self.files[index]}

    def _crop_box(self, width: int, height: int, generator: torch.Generator) -> tuple[float, float, float, float]:
        if self.augment == "resize":
            return 0, 0, width, height
        side = min(width, height)
        if self.augment == "random_resized_crop":
            u = torch.rand(10, 4, generator=generator).tolist()
            for u_area, u_aspect, u_x, u_y in u:  # as torchvision's RandomResizedCrop: 10 tries, then the centre
                area = width * height * (self.min_scale + (1 - self.min_scale) * u_area)
                aspect = math.exp(math.log(3 / 4) + u_aspect * math.log(16 / 9))
                w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
                if w <= width and h <= height:
                    left, top = u_x * (width - w), u_y * (height - h)
                    return left, top, left + w, top + h
        left, top = (width - side) / 2, (height - side) / 2
        return left, top, left + side, top + side


def collate(samples: list[dict]) -> dict:
    """A batch {"images": (B, 3, S, S), "keys": [...], "skipped": [reasons]} without the unreadable images."""
    good = [s for s in samples if "error" not in s]
    return {
        "images": torch.stack([s["image"] for s in good]) if good else None,
        "keys": [s["key"] for s in good],
        "skipped": [s["error"] for s in samples if "error" in s],
    }


class EpochStreamSampler(Sampler):
    """An endless stream of (epoch, index) for one of ``world_size`` processes.

    Each epoch is a fresh permutation seeded by (seed, epoch), dealt out across processes (the
    remainder that does not divide evenly is left out of that epoch). ``start`` skips that many of
    this process's samples, which is how a resumed run continues exactly where it stopped.
    """

    def __init__(self, num_images: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if num_images < world_size:
            raise ValueError(f"{num_images} images cannot be shared among {world_size} processes")
        self.num_images, self.seed, self.rank, self.world_size, self.start = num_images, seed, rank, world_size, start
        self.per_process = num_images // world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        epoch: Optional[int] = None
        while True:
            current, offset = divmod(position, self.per_process)
            if current != epoch:
                epoch = current
                order = torch.randperm(self.num_images, generator=sample_generator(self.seed, epoch, -1))
            yield epoch, int(order[self.rank + offset * self.world_size])
            position += 1
