"""Tracking a video into a folder: DAVIS-layout label PNGs, an overlay video, resumable.

Output folder:
  <frame>.png         indexed label PNG per frame (the first is the given mask), written atomically
  overlay.mp4         frames with coloured labels, appears only when the run is complete
  track.json          settings and timing, written last: its presence means the run finished
  .track-state/       while running: the settings and the soft labels of the last frames, so that
                      ``resume=True`` continues exactly where an interrupted run stopped
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from tqdm import tqdm

from ..atomic_files import atomic_output, write_json
from ..data.label_maps import read_label_png, write_label_png
from .tracker import VideoTracker
from .video import VideoFrames, video_writer

PathLike = Union[str, os.PathLike]
STATE_DIR = ".track-state"
SUMMARY = "track.json"
OVERLAY = "overlay.mp4"


def overlay_labels(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` with labelled pixels (label > 0) blended with their palette colour."""
    colors = palette[np.minimum(labels, len(palette) - 1)].astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + colors * alpha
    return np.where(labels[..., None] > 0, blended, image).round().astype(np.uint8)


def _check_unchanged(saved: dict, settings: dict, problem: str) -> None:
    changed = sorted(k for k in settings if saved.get(k) != settings[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ValueError(f"{problem} ({details})")


class _State:
    """The soft labels of recent frames on disk, plus the settings of the run they belong to."""

    def __init__(self, out: Path):
        self.dir = out / STATE_DIR

    def start(self, settings: dict, resume: bool) -> int:
        """The first frame index still to track (1 for a fresh run)."""
        run_file = self.dir / "run.json"
        if not resume:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json(run_file, settings)
            return 1
        if not run_file.is_file():
            raise ValueError(f"nothing to resume in {self.dir.parent} (no {STATE_DIR}/run.json)")
        _check_unchanged(json.loads(run_file.read_text()), settings, "cannot resume with different settings")
        done = [int(p.stem.split("_")[1]) for p in self.dir.glob("soft_*.npy")]
        return max(done, default=0) + 1

    def path(self, index: int) -> Path:
        return self.dir / f"soft_{index:06d}.npy"

    def save(self, index: int, soft: torch.Tensor, keep: int) -> None:
        with atomic_output(self.path(index)) as tmp:
            np.save(tmp, soft.numpy())
        self.path(index - keep - 1).unlink(missing_ok=True)  # older frames are out of the context

    def load(self, index: int) -> torch.Tensor:
        path = self.path(index)
        if not path.is_file():
            raise ValueError(f"cannot resume: the saved state of frame {index} ({path}) is missing")
        return torch.from_numpy(np.load(path, allow_pickle=False))

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def track_video(
    tracker: VideoTracker,
    video: PathLike,
    mask: Union[PathLike, tuple[np.ndarray, np.ndarray]],
    out: PathLike,
    *,
    settings: Optional[dict[str, Any]] = None,
    resume: bool = False,
    overlay: bool = True,
    progress: bool = True,
) -> dict:
    """Track ``video`` from the first-frame ``mask`` (a label image, or (labels, palette) arrays) into
    the folder ``out``; returns the summary also written to ``out/track.json``.

    ``settings`` (model name, weights...) are recorded; resuming checks they are unchanged.
    """
    out = Path(out)
    frames = VideoFrames(video)
    labels, palette = read_label_png(mask) if isinstance(mask, (str, os.PathLike)) else mask
    width, height = frames.first().size  # check the mask before anything is written
    if labels.shape != (height, width):
        raise ValueError(f"the mask is {labels.shape[1]}x{labels.shape[0]} but the video is {width}x{height}")
    tracker.check_frame_size(width, height)
    if not labels.any():
        warnings.warn("the first-frame mask has no object (all background): every frame will be background",
                      stacklevel=2)
    settings = {**(settings or {}), "video": str(Path(video).resolve()), "short_side": tracker.short_side,
                "propagation": vars(tracker.config), "labels_sha": _digest(labels)}
    if (out / SUMMARY).exists():
        if resume:
            finished = json.loads((out / SUMMARY).read_text())
            _check_unchanged(finished, settings, f"{out} holds a run finished with other settings")
            return finished
        raise ValueError(f"{out} already holds a finished tracking run; choose another output folder")
    if (out / STATE_DIR).exists() and not resume:
        raise ValueError(f"{out} holds an interrupted tracking run; pass resume (--resume) to continue it")
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out)
    start = state.start(settings, resume)

    began, tracked = time.perf_counter(), 0
    with contextlib.ExitStack() as stack:
        write_overlay = stack.enter_context(video_writer(out / OVERLAY, frames.fps)) if overlay else None
        steps = tracker.track(frames, labels, start=start, saved_soft=state.load)
        bar = stack.enter_context(tqdm(steps, total=frames.total, unit="frame", disable=not progress,
                                       desc=Path(video).name))
        for frame in bar:
            png = out / f"{frame.name}.png"
            if frame.labels is None:  # replayed on resume: the labels are on disk already
                frame_labels, _ = read_label_png(png)
            else:
                frame_labels = frame.labels
                write_label_png(png, frame_labels, palette)
                if frame.index > 0:
                    state.save(frame.index, frame.soft, keep=tracker.config.context)
                    tracked += 1
            if write_overlay:
                write_overlay(overlay_labels(np.asarray(frame.image), frame_labels, palette))
    elapsed = time.perf_counter() - began
    summary = {**settings, "frames": frame.index + 1, "tracked_now": tracked, "seconds": round(elapsed, 3),
               "fps": round(tracked / elapsed, 3) if tracked else None, "overlay": OVERLAY if overlay else None}
    state.finish()
    write_json(out / SUMMARY, summary)
    return summary


def _digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels).tobytes() + str(labels.shape).encode()).hexdigest()[:16]
