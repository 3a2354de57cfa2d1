"""DAVIS evaluation: tracking a set of sequences (resumable, shared out over the processes of torchrun) and
scoring the results, per sequence and overall J, F and J&F as the official toolkit."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .. import distributed
from ..atomic_files import atomic_output
from ..data.label_maps import read_label_png
from .davis import DavisLayout
from .metrics import Statistics, score_sequence
from .run import STATE_DIR, SUMMARY, track_video
from .tracker import VideoTracker

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ObjectScore:
    sequence: str
    object_id: int
    j: Statistics
    f: Statistics


def _read_stack(paths: Sequence[Path]) -> np.ndarray:
    return np.stack([read_label_png(p)[0] for p in paths])


def score_results(layout: DavisLayout, results: PathLike, sequences: Sequence[str]) -> list[ObjectScore]:
    """Scores of every object of ``sequences``; ``results/<sequence>/<frame>.png`` are the predictions."""
    scores = []
    for sequence in sequences:
        truth_files = layout.annotations(sequence)
        if not truth_files:
            raise FileNotFoundError(f"no annotations for '{sequence}' in {layout.annotations_dir(sequence)}")
        pred_files = [Path(results) / sequence / p.name for p in truth_files]
        missing = [str(p) for p in pred_files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} result frame(s) of '{sequence}' are missing, e.g. {missing[0]}")
        truth, pred = _read_stack(truth_files), _read_stack(pred_files)
        if truth.shape != pred.shape:
            raise ValueError(f"results of '{sequence}' are {pred.shape[1:]} pixels, annotations {truth.shape[1:]}")
        for obj, (j, f) in score_sequence(truth, pred).items():
            scores.append(ObjectScore(sequence, obj, Statistics.of(j), Statistics.of(f)))
    return scores


def evaluate_davis(layout: DavisLayout, sequences: Sequence[str], results: PathLike, tables: PathLike, *,
                   tracker: Optional[VideoTracker] = None, settings: Optional[dict] = None, image_set: str = "val",
                   label: str = "", progress: bool = True) -> tuple[dict, list[dict], list[str]]:
    """Track ``sequences`` with ``tracker`` into ``results/<sequence>`` (each continues where an earlier run
    stopped; no tracker: score the results there), score them and write the global and per-sequence tables
    into ``tables``. Returns (overall, per sequence, the sequences an earlier run had started).

    Under torchrun sequence i is tracked and scored by rank i mod the number of processes; rank 0 gathers the
    scores, writes the tables, and every rank returns them: the same as one process."""
    rank, world = distributed.start()
    results = Path(results)
    started = [s for s in sequences if (results / s / SUMMARY).exists() or (results / s / STATE_DIR).exists()]
    distributed.barrier(world)  # every rank has looked before any starts tracking
    mine = list(sequences)[rank::world]
    if tracker is not None:
        for sequence in mine:
            print(f"{label}[{sequences.index(sequence) + 1}/{len(sequences)}] {sequence}", flush=True)
            track_video(tracker, layout.frames_dir(sequence), layout.annotations(sequence)[0], results / sequence,
                        settings=settings, resume=sequence in started, overlay=False, progress=progress)
    gathered = distributed.gather_on_rank_0(score_results(layout, results, mine), world)
    tables_written = None
    if rank == 0:
        order = {sequence: i for i, sequence in enumerate(sequences)}
        scores = sorted((s for part in gathered for s in part), key=lambda s: (order[s.sequence], s.object_id))
        overall, per_sequence = summarize(scores)
        Path(tables).mkdir(parents=True, exist_ok=True)
        write_csv(Path(tables) / f"global_results-{image_set}.csv", [overall])
        write_csv(Path(tables) / f"per-sequence_results-{image_set}.csv", per_sequence)
        tables_written = overall, per_sequence
    overall, per_sequence = distributed.from_rank_0(tables_written, world)
    return overall, per_sequence, started


def summarize(scores: Sequence[ObjectScore]) -> tuple[dict[str, float], list[dict[str, object]]]:
    """(overall, per sequence): the official global table averages over objects of all sequences."""
    if not scores:
        raise ValueError("nothing to summarize: no objects were scored")

    def mean(values) -> float:
        return float(np.mean(list(values)))

    overall = {
        "J&F-Mean": (mean(s.j.mean for s in scores) + mean(s.f.mean for s in scores)) / 2,
        "J-Mean": mean(s.j.mean for s in scores), "J-Recall": mean(s.j.recall for s in scores),
        "J-Decay": mean(s.j.decay for s in scores), "F-Mean": mean(s.f.mean for s in scores),
        "F-Recall": mean(s.f.recall for s in scores), "F-Decay": mean(s.f.decay for s in scores),
    }
    per_sequence = []
    for sequence in dict.fromkeys(s.sequence for s in scores):
        mine = [s for s in scores if s.sequence == sequence]
        j, f = mean(s.j.mean for s in mine), mean(s.f.mean for s in mine)
        per_sequence.append({"Sequence": sequence, "Objects": len(mine), "J&F-Mean": (j + f) / 2, "J-Mean": j,
                             "F-Mean": f})
    return overall, per_sequence


def write_csv(path: PathLike, rows: Sequence[dict]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)


def format_table(rows: Sequence[dict]) -> str:
    """A plain text table of ``rows`` (floats to 3 decimals)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    header = list(rows[0])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
