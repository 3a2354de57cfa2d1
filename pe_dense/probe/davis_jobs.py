"""The DAVIS probe: zero-shot label propagation over every sequence of the val set with the protocol's
settings (docs/protocols.md#davis-label-propagation), as ``tools/eval_davis.py`` runs it: each sequence
resumes where it stopped, then J&F is scored as the official toolkit does."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .. import distributed
from ..data.moving_shapes import ensure_moving_shapes
from ..models import build_encoder
from ..tracking import DavisLayout, VideoTracker
from ..tracking.evaluate import evaluate_davis
from .tasks import SMOKE_SHORT_SIDE

IMAGE_SET = "val"


def check(root: Path) -> None:
    """Fail, naming what is missing, unless ``root`` is a DAVIS 2017 folder whose val sequences all have
    frames and first-frame labels."""
    layout = DavisLayout(root)
    for sequence in layout.sequences(IMAGE_SET):
        if not layout.frames_dir(sequence).is_dir():
            raise FileNotFoundError(f"the frames of DAVIS sequence '{sequence}' are missing: "
                                    f"{layout.frames_dir(sequence)}")
        if not layout.annotations(sequence):
            raise FileNotFoundError(f"DAVIS sequence '{sequence}' has no labels in {layout.annotations_dir(sequence)}")


def run(model: str, weights: Path, layer: int, root: Optional[Path], smoke: bool, folder: Path
        ) -> tuple[dict, Optional[str]]:
    """(J&F and the other DAVIS figures in percent, how much an earlier run had tracked or None). ``root``
    None: the built-in moving shapes."""
    layout = DavisLayout(root or ensure_moving_shapes())
    sequences = layout.sequences(IMAGE_SET)
    device = f"cuda:{distributed.local_rank()}" if torch.cuda.is_available() else "cpu"
    size = {"short_side": SMOKE_SHORT_SIDE} if smoke else {}  # else the protocol's
    tracker = VideoTracker.from_encoder(build_encoder(model, weights, device=device), layer=layer, **size)
    settings = {"model": model, "weights": str(weights), "layer": layer}
    overall, _, started = evaluate_davis(layout, sequences, folder / "results", folder, tracker=tracker,
                                         settings=settings, image_set=IMAGE_SET, label="davis ", progress=False)
    resumed = f"{len(started)} of {len(sequences)} sequences" if started else None
    return {name: 100 * value for name, value in overall.items()}, resumed
