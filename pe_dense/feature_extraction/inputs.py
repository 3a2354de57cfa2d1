"""The items of a features run: images and video frames named on the command line (files, folders searched
recursively, .txt lists of paths, video files, built-in samples), their resizing, and their loading in
DataLoader worker processes, where a file that cannot be read becomes a failure with its reason."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image

from ..data.image_sources import IMAGE_SUFFIXES, SAMPLE_PREFIX
from ..data.samples import SAMPLE_IMAGES, sample_image
from ..models.preprocess import PE_PIXELS, Pixels, aspect_size, load_image, preprocess
from ..tracking.video import VIDEO_SUFFIXES, VideoFrames

LIST_SUFFIX = ".txt"
INPUT_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES  # what a folder's search picks up


@dataclass(frozen=True)
class Item:
    """One image to run: its name in the store, and where it comes from (a file, a frame of a video file, or
    a built-in sample when ``path`` is None)."""

    name: str
    path: Optional[str] = None
    frame: Optional[int] = None


@dataclass(frozen=True)
class Frames:
    """Which frames of a video file become items: every ``every``-th, or about ``fps`` per second."""

    every: int = 1
    fps: Optional[float] = None

    def step(self, video_fps: float) -> int:
        return self.every if self.fps is None else max(1, round(video_fps / self.fps))

    def describe(self) -> dict:
        return {"every": self.every} if self.fps is None else {"fps": self.fps}


def list_items(specs: Sequence[str], frames: Frames = Frames()) -> tuple[list[Item], list[dict]]:
    """(items in input order, failures) for the command line's inputs. A path that does not exist is an error
    (FileNotFoundError); a video file that cannot be opened is a failure with its reason, and the rest goes
    on. Folders are searched recursively, in sorted order; a name appears once (its first time)."""
    items: dict[str, Item] = {}
    failures: list[dict] = []
    for name, path in _expand(specs):
        if path is None:
            items.setdefault(name, Item(name))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            try:
                video = VideoFrames(path)
                step, count = frames.step(video.fps), video.count()
            except ValueError as e:
                failures.append({"item": name, "reason": str(e)})
                continue
            for index in range(0, count, step):
                items.setdefault(f"{name}/{index:06d}", Item(f"{name}/{index:06d}", str(path), index))
        else:
            items.setdefault(name, Item(name, str(path)))
    return list(items.values()), failures


def _expand(specs: Sequence[str], base: Optional[Path] = None) -> list[tuple[str, Optional[Path]]]:
    """(name, file) of every input; a name is the path as written (a folder's files below it, a list's entries
    joined to the list's folder), so ``photos/`` gives ``photos/cat.jpg``; samples have no file."""
    found = []
    for spec in specs:
        if spec.startswith(SAMPLE_PREFIX):
            if spec[len(SAMPLE_PREFIX):] not in SAMPLE_IMAGES:
                raise ValueError(f"unknown sample image '{spec[len(SAMPLE_PREFIX):]}', expected one of "
                                 f"{', '.join(SAMPLE_IMAGES)}")
            found.append((spec, None))
            continue
        path = base / spec if base is not None else Path(spec)
        name = Path(os.path.normpath(path)).as_posix()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in INPUT_SUFFIXES and p.is_file())
            if not files:
                raise ValueError(f"folder '{spec}' has no images or videos ({', '.join(INPUT_SUFFIXES)})")
            found += [(Path(name, p.relative_to(path)).as_posix(), p) for p in files]  # "." adds nothing
        elif path.is_file() and path.suffix.lower() == LIST_SUFFIX:
            lines = [line.strip() for line in path.read_text().splitlines()]
            found += _expand([line for line in lines if line and not line.startswith("#")], path.parent)
        elif path.is_file():
            found.append((name, path))
        else:
            listed = f" (listed in a file in {base})" if base is not None else ""
            raise FileNotFoundError(f"input '{spec}' does not exist{listed}")
    return found


@dataclass(frozen=True)
class Resize:
    """How an image becomes model input: squashed to ``size`` (height, width), or keeping its aspect with the
    short side at ``short_side`` or at most ``max_tokens`` patches, sides multiples of ``patch``; then
    normalised as the encoder was trained (``pixels``)."""

    patch: int
    size: Optional[tuple[int, int]] = None
    short_side: Optional[int] = None
    max_tokens: Optional[int] = None
    pixels: Pixels = PE_PIXELS

    def __call__(self, width: int, height: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        return aspect_size(width, height, self.patch, short_side=self.short_side, max_tokens=self.max_tokens)

    def describe(self) -> dict:
        pixels = {"interpolation": self.pixels.interpolation, "mean": list(self.pixels.mean),
                  "std": list(self.pixels.std)}
        if self.size is not None:
            return {"resize": "squash", "size": list(self.size), **pixels}
        if self.short_side is not None:
            return {"resize": "short-side", "short_side": self.short_side, "patch": self.patch, **pixels}
        return {"resize": "max-tokens", "max_tokens": self.max_tokens, "patch": self.patch, **pixels}


class _FrameCursor:
    """Frames of one video file decoded in order, so that a process asked for increasing frames of the same
    file decodes it once; a file that breaks stays broken from that frame on."""

    def __init__(self):
        self.path: Optional[str] = None

    def frame(self, path: str, index: int) -> Image.Image:
        if path != self.path or index < self.next:
            self.path, self.next, self.error, self.frames = path, 0, None, iter(())
            try:  # a file that cannot be opened now fails as itself, never with another file's frames
                self.frames = iter(VideoFrames(path))
            except (ValueError, OSError) as e:
                self.error = str(e)
        if self.error is not None:
            raise ValueError(self.error)
        try:
            for _, image in self.frames:
                self.next += 1
                if self.next - 1 == index:
                    return image
            self.error = f"'{path}' ends before frame {index}"
        except ValueError as e:
            self.error = str(e)
        raise ValueError(self.error)


class LoadedItems(torch.utils.data.Dataset):
    """``(index, model input (3, H, W) or None, image size (W, H) or None, failure reason or None)`` of
    ``items[index]``: what a DataLoader's worker processes decode and resize while the model runs."""

    def __init__(self, items: Sequence[Item], resize: Resize):
        self.items, self.resize = items, resize
        self.cursor = _FrameCursor()

    def __len__(self) -> int:
        return len(self.items)

    def load(self, item: Item) -> Image.Image:
        if item.path is None:
            return sample_image(item.name[len(SAMPLE_PREFIX):])
        if item.frame is None:
            return load_image(item.path)
        return self.cursor.frame(item.path, item.frame)

    def __getitem__(self, index: int):
        try:
            image = self.load(self.items[index])
        except (ValueError, OSError) as e:
            return index, None, None, str(e)
        return index, preprocess(image, self.resize(*image.size), self.resize.pixels), image.size, None
