"""What the built-in datasets share: splits generated on first use from a seed, written file by file
(atomically) and listed in a manifest once complete, so that a split made with other settings, or by
another format version, is generated again."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

import numpy as np
from PIL import Image

from ..atomic_files import atomic_output, write_json


def datasets_root() -> Path:
    """Where the built-in datasets are generated on first use: ``$PE_DENSE_DATASETS``, else ``datasets/``."""
    return Path(os.environ.get("PE_DENSE_DATASETS", "datasets"))


class SplitSpec(NamedTuple):
    num_images: int
    seed: int


@dataclass(frozen=True)
class ImageFolderDataset:
    """A generated dataset in the folder layout of mmsegmentation's ADE20k and NYU classes:
    ``<root>/images/<split>/scene_XXXXXX.jpg``, ``<root>/annotations/<split>/scene_XXXXXX.png`` and
    the manifest ``<root>/<manifest>``.

    Args:
        manifest: the manifest's file name.
        header: the format version and dataset facts written into the manifest; a manifest with
            another header is out of date (its splits are generated again).
        splits: the default number of images and seed of each known split.
        default_size: the image size when none is given (any JSON value: an int, a [height, width]).
        render: ``(index, seed, size) -> (rgb, annotation)``: an (H, W, 3) uint8 image and an (H, W)
            uint8 or uint16 annotation, a function of its arguments only.
    """

    manifest: str
    header: Mapping[str, Any]
    splits: Mapping[str, SplitSpec]
    default_size: Any
    render: Callable[[int, int, Any], tuple[np.ndarray, np.ndarray]]

    def settings(self, split: str, num_images: Optional[int] = None, seed: Optional[int] = None,
                 size: Any = None) -> dict:
        """A split's settings as the manifest records them (defaults from :attr:`splits`)."""
        if split not in self.splits and (num_images is None or seed is None):
            raise ValueError(f"unknown split '{split}' (known: {', '.join(self.splits)}); give num_images and seed")
        default = self.splits.get(split, SplitSpec(0, 0))
        num_images = default.num_images if num_images is None else num_images
        if num_images < 1:
            raise ValueError(f"num_images must be positive, got {num_images}")
        size = self.default_size if size is None else size
        return {"num_images": num_images, "seed": default.seed if seed is None else seed,
                "size": list(size) if isinstance(size, (tuple, list)) else size}  # as JSON reads it back

    def write_split(self, root: Union[str, os.PathLike], split: str, num_images: Optional[int] = None,
                    seed: Optional[int] = None, size: Any = None) -> Path:
        """Write a split under ``root``; the manifest is updated last, so a split it lists is complete."""
        settings = self.settings(split, num_images, seed, size)
        root = Path(root)
        for folder in ("images", "annotations"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        names = [f"scene_{index:06d}" for index in range(settings["num_images"])]
        for index, name in enumerate(names):
            pixels, annotation = self.render(index, settings["seed"], settings["size"])
            with atomic_output(root / "images" / split / f"{name}.jpg") as tmp:
                Image.fromarray(pixels).save(tmp, quality=95)
            with atomic_output(root / "annotations" / split / f"{name}.png") as tmp:
                Image.fromarray(annotation).save(tmp)  # uint16 arrays make 16-bit PNGs
        kept = set(names)
        for folder in ("images", "annotations"):  # images of an earlier, larger split are not this one's
            for stale in (root / folder / split).glob("scene_*"):
                if stale.stem not in kept:
                    stale.unlink()
        manifest = self.read_manifest(root)
        manifest["splits"][split] = settings
        write_json(root / self.manifest, manifest)
        return root

    def read_manifest(self, root: Union[str, os.PathLike]) -> dict:
        """The manifest under ``root``, or an empty one when it is absent or out of date."""
        header = json.loads(json.dumps(dict(self.header)))  # as it reads back (tuples become lists)
        fresh = {**header, "splits": {}}
        try:
            manifest = json.loads((Path(root) / self.manifest).read_text())
        except (OSError, ValueError):
            return fresh
        return manifest if {k: manifest.get(k) for k in header} == header else fresh

    def ensure(self, root: Union[str, os.PathLike], splits=None, **kwargs) -> Path:
        """``root`` with the given splits (default: all known) present, generating each one that is
        absent or was made with other settings (``kwargs`` as :meth:`write_split`). Image i is a function
        of (i, seed, size) alone, so a split with the same seed and size and more images holds the one asked
        for as its first images, and is kept."""
        for split in self.splits if splits is None else splits:
            wanted = self.settings(split, **kwargs)
            present = self.read_manifest(root)["splits"].get(split)
            if not present or present["num_images"] < wanted["num_images"] or any(
                    present[key] != wanted[key] for key in ("seed", "size")):
                self.write_split(root, split, **kwargs)
        return Path(root)

