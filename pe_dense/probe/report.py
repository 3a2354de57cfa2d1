"""The probe's outputs: ``probe.json``, and ``probe.md`` / ``probe.csv`` with one row per task and layer
setting, its metric beside the published PE-Spatial number of the model's size and the difference; with
several layers per task, ``probe_layers.png``: each task's metric against the layer."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from ..atomic_files import atomic_output, write_json
from ..viz.figures import save_figure
from .published import published, reference_model
from .tasks import TASKS

COLUMNS = ("task", "data", "layers", "metric", "value", "published", "difference", "seconds")
NO_DEPTH_NUMBER = ("nyu: PE-Spatial's depth results are not public (docs/results.md#published-results), so there is "
                   "no published number to compare with")


def make_row(task_name: str, model: str, smoke: bool, layers, metrics: dict, seconds: float,
             resumed: Optional[str]) -> dict:
    """A finished job's row (also its result.json)."""
    task = TASKS[task_name]
    value = metrics[task.metric]
    reference = published(model, task.name)
    return {"task": task.name, "data": task.smoke_dataset if smoke else task.dataset, "layers": list(layers),
            "metric": task.metric_label, "value": value, "published": reference,
            "difference": None if reference is None else value - reference, "seconds": round(seconds, 1),
            "resumed": resumed, "metrics": metrics}


def _cells(row: dict) -> list[str]:
    decimals = TASKS[row["task"]].decimals

    def number(value, sign=""):
        return "-" if value is None else f"{value:{sign}.{decimals}f}"

    return [row["task"], row["data"], ",".join(map(str, row["layers"])), row["metric"], number(row["value"]),
            number(row["published"]), number(row["difference"], "+"), _duration(row["seconds"])]


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(model: str, weights: str, smoke: bool, rows: list[dict]) -> str:
    reference = reference_model(model)
    header = [*COLUMNS[:5], f"published ({reference})", "difference", "time"]
    lines = [f"# Frozen-feature probe of {model}", "", f"Weights: {weights}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    notes = ["published: the PE paper's number for PE-Spatial of this size, at the protocol's layer "
             "(docs/results.md#published-results); difference: value - published"]
    if any(row["published"] is None for row in rows):
        notes.append(NO_DEPTH_NUMBER)
    if smoke:
        notes.append("smoke run: a few iterations on the built-in data, which shows the pipeline works; the "
                     "published numbers are for the real datasets, so the difference means nothing here")
    return "\n".join([*lines, "", *(f"- {note}" for note in notes)]) + "\n"


def layer_figure(model: str, rows: list[dict]):
    """Metric against layer, one panel per task, with the published number (at the protocol's layer) as a line."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    fig = Figure(figsize=(4.5 * len(tasks), 3.5), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks):
        mine = sorted((row for row in rows if row["task"] == name), key=lambda row: row["layers"])
        ax.plot([row["layers"][0] for row in mine], [row["value"] for row in mine], "o-", label=model)
        if mine[0]["published"] is not None:
            ax.axhline(mine[0]["published"], color="gray", linestyle="--",
                       label=f"published {reference_model(model)} (last layer)")
        ax.set(title=name, xlabel="layer (block)", ylabel=mine[0]["metric"])
        ax.legend(fontsize=8)
    return fig


def write_report(out: Path, model: str, weights: str, smoke: bool, rows: list[dict]) -> str:
    """Write probe.json, probe.md, probe.csv and, with several layers of a task, probe_layers.png; the
    Markdown table."""
    table = markdown(model, weights, smoke, rows)
    summary = {"model": model, "weights": weights, "smoke": smoke, "published_for": reference_model(model),
               "rows": rows}
    write_json(out / "probe.json", summary)
    with atomic_output(out / "probe.md") as tmp:
        tmp.write_text(table)
    with atomic_output(out / "probe.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([row["task"], row["data"], " ".join(map(str, row["layers"])), row["metric"],
                          *(None if v is None else round(v, 4) for v in (row["value"], row["published"],
                                                                          row["difference"])), row["seconds"]]
                         for row in rows)
    if any(sum(row["task"] == other["task"] for other in rows) > 1 for row in rows):
        save_figure(layer_figure(model, rows), out / "probe_layers.png")
    return table
