"""The probe's outputs: ``probe.json``, and ``probe.md`` / ``probe.csv`` with one row per encoder, task and
layer setting: its metric beside the published PE-Spatial number of a PE model's size and the difference,
the encoder's images/s and peak memory at the protocol's resolution, and the protocol each task ran. One
run's report, or several finished runs merged (``pe-dense probe --compare``, with ``probe_compare.png``:
each task's metric against the encoder's size); with several layers per task, ``probe_layers.png``: each
task's metric against the layer."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional, Sequence

from ..atomic_files import atomic_output, write_json
from ..viz.figures import save_figure
from .published import published, reference_model
from .tasks import TASKS

COLUMNS = ("encoder", "parameters (M)", "task", "data", "layers", "metric", "value", "published", "difference",
           "images/s", "peak memory (MiB)", "seconds")
PROTOCOL_COLUMNS = ("layers", "resolution", "head", "schedule")
SUMMARY = "probe.json"
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


def run_summary(model: str, weights: str, smoke: bool, parameters: int, protocol: dict, throughput: dict,
                rows: list[dict]) -> dict:
    """What one run's probe.json holds; ``protocol``: task -> Protocol.statement as the jobs ran it."""
    return {"model": model, "weights": weights, "smoke": smoke, "published_for": reference_model(model),
            "parameters": parameters, "protocol": protocol, "throughput": throughput, "rows": rows}


def read_run(folder: Path) -> dict:
    """A finished run's summary, or a ValueError naming what is wrong."""
    path = folder / SUMMARY
    if not path.is_file():
        raise ValueError(f"{folder} holds no finished probe run (no {SUMMARY}); run its probe to the end first")
    summary = json.loads(path.read_text())
    if "model" not in summary:
        raise ValueError(f"{path} is not one run's summary (a comparison's?): pass the runs' own folders")
    missing = [key for key in ("protocol", "parameters", "throughput") if key not in summary]
    if missing:
        raise ValueError(f"{path} was written by an earlier pe_dense without the {', '.join(missing)} a comparison "
                         "needs: run the same probe command again (its finished jobs are kept)")
    return summary


def merge(runs: Sequence[dict]) -> list[dict]:
    """Runs of the same protocol: every task's statement and --smoke agree across the runs, or a ValueError
    names the difference. Returns every row with its run's encoder, size and throughput."""
    if len({run["smoke"] for run in runs}) > 1:
        raise ValueError("the runs mix --smoke and real runs: their numbers do not compare")
    stated = {}
    for run in runs:
        for task, statement in run["protocol"].items():
            first = stated.setdefault(task, (run["model"], statement))
            if statement != first[1]:
                field = next(k for k in statement if statement[k] != first[1].get(k))
                raise ValueError(f"{run['model']} and {first[0]} ran {task} under different protocols ({field}: "
                                 f"{statement[field]!r} vs {first[1].get(field)!r})")
    return [{"encoder": run["model"], "parameters": run["parameters"], "throughput": run["throughput"], **row}
            for run in runs for row in run["rows"]]


def _cells(row: dict) -> list[str]:
    decimals = TASKS[row["task"]].decimals

    def number(value, sign=""):
        return "-" if value is None else f"{value:{sign}.{decimals}f}"

    speed = row["throughput"]
    return [row["encoder"], f"{row['parameters'] / 1e6:.1f}", row["task"], row["data"],
            ",".join(map(str, row["layers"])), row["metric"], number(row["value"]), number(row["published"]),
            number(row["difference"], "+"), f"{speed['images_per_s']:g}", str(speed["peak_memory_mib"]),
            _duration(row["seconds"])]


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(runs: Sequence[dict], rows: list[dict]) -> str:
    title = f"Frozen-feature probe of {runs[0]['model']}" if len(runs) == 1 else "Frozen-feature probe comparison"
    header = [*COLUMNS[:-1], "time"]
    lines = [f"# {title}", "", *(f"- {run['model']}: weights {run['weights']}" for run in runs), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    protocol = {task: statement for run in runs for task, statement in run["protocol"].items()}
    lines += ["", "## Protocol", "", "| task | " + " | ".join(PROTOCOL_COLUMNS) + " |",
              "|" + "---|" * (len(PROTOCOL_COLUMNS) + 1)]
    lines += [f"| {task} | " + " | ".join(statement[c] for c in PROTOCOL_COLUMNS) + " |"
              for task, statement in protocol.items()]
    speeds = {(run["model"], json.dumps(run["throughput"], sort_keys=True)): run["throughput"] for run in runs}
    notes = ["published: for a PE model, the PE paper's number for PE-Spatial of its size, at the protocol's layer "
             "(docs/results.md#published-results); difference: value - published. A timm model's authors "
             "publish under their own protocols: docs/comparison.md sets those numbers beside these",
             *(f"images/s, peak memory of {model}: {speed['precision']}, batches of {speed['batch']} at "
               f"{speed['resolution'][0]}x{speed['resolution'][1]} on {speed['device']} ({speed['threads']} threads)"
               for (model, _), speed in speeds.items())]
    if any(row["task"] == "nyu" and row["published"] is None for row in rows):
        notes.append(NO_DEPTH_NUMBER)
    if runs[0]["smoke"]:
        notes.append("smoke run: a few iterations on the built-in data, which shows the pipeline works; the "
                     "published numbers are for the real datasets, so the difference means nothing here")
    return "\n".join([*lines, "", *(f"- {note}" for note in notes)]) + "\n"


def layer_figure(rows: list[dict]):
    """Metric against layer, one panel per task, with the published number (at the protocol's layer) as a line."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    fig = Figure(figsize=(4.5 * len(tasks), 3.5), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks):
        for encoder in dict.fromkeys(row["encoder"] for row in rows):
            mine = sorted((row for row in rows if row["task"] == name and row["encoder"] == encoder),
                          key=lambda row: row["layers"])
            if not mine:
                continue
            ax.plot([row["layers"][0] for row in mine], [row["value"] for row in mine], "o-", label=encoder)
            if mine[0]["published"] is not None:
                ax.axhline(mine[0]["published"], color="gray", linestyle="--",
                           label=f"published {reference_model(encoder)} (last layer)")
            ax.set(title=name, xlabel="layer (block)", ylabel=mine[0]["metric"])
        ax.legend(fontsize=8)
    return fig


def size_figure(rows: list[dict]):
    """Each task's metric (at the protocol's layers) against the encoder's parameters, one point per encoder."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    fig = Figure(figsize=(4.5 * len(tasks), 3.5), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks):
        for row in (row for row in rows if row["task"] == name):
            ax.plot(row["parameters"] / 1e6, row["value"], "o")
            ax.annotate(row["encoder"], (row["parameters"] / 1e6, row["value"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
        ax.set(title=name, xlabel="parameters (M)", ylabel=next(r["metric"] for r in rows if r["task"] == name))
    return fig


def write_report(out: Path, runs: Sequence[dict]) -> str:
    """Write probe.json (one run's summary, or the runs and their merged rows), probe.md, probe.csv and the
    figures; the Markdown table."""
    rows = merge(runs)  # checked before anything is written
    table = markdown(runs, rows)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SUMMARY, runs[0] if len(runs) == 1 else {"runs": list(runs), "rows": rows})
    with atomic_output(out / "probe.md") as tmp:
        tmp.write_text(table)
    with atomic_output(out / "probe.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([row["encoder"], round(row["parameters"] / 1e6, 1), row["task"], row["data"],
                          " ".join(map(str, row["layers"])), row["metric"],
                          *(None if v is None else round(v, 4) for v in (row["value"], row["published"],
                                                                          row["difference"])),
                          row["throughput"]["images_per_s"], row["throughput"]["peak_memory_mib"], row["seconds"]]
                         for row in rows)
    if any(sum((r["encoder"], r["task"]) == (row["encoder"], row["task"]) for r in rows) > 1 for row in rows):
        save_figure(layer_figure(rows), out / "probe_layers.png")
    if len(runs) > 1:
        save_figure(size_figure(rows), out / "probe_compare.png")
    return table
