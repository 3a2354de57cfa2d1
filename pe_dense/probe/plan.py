"""What a probe run will do, checked before anything is trained or written: the tasks, their data, the
layers against the model's depth, the weights against the model, and the jobs' folders in ``--out``.

One job is one task at one layer setting (the protocol's layers, or one of ``layers``); its folder holds
``job.json`` (what it runs) and, once finished, ``result.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

from ..models import PEVisionTransformer, TimmConfig, build_encoder, encoder_config, load_weights, resolve_weights
from ..models.timm_encoder import weights_file
from . import davis_jobs, mmseg_jobs
from .tasks import SMOKE_RESOLUTION, SMOKE_SHORT_SIDE, TASKS, Config, Task, parse_tasks, short_side_rule

JOB_FILE, RESULT_FILE = "job.json", "result.json"
RANDOM_WEIGHTS = "random_weights.pt"  # --smoke without --weights: seeded random weights shared by every task
RANDOM_SEED = 0


@dataclass(frozen=True)
class ProbeRequest:
    model: str  # a PE model, or a timm ViT as timm:NAME
    out: Path
    weights: Optional[str] = None  # a checkpoint path, "hub" or hf://repo:file; only --smoke may go without
    tasks: Sequence[str] = field(default_factory=lambda: tuple(TASKS))
    data: Mapping[str, str] = field(default_factory=dict)  # task -> dataset folder (not with smoke)
    layers: Optional[Sequence[int]] = None  # None: each task's protocol layers; else one job per layer
    smoke: bool = False
    launcher: str = "none"


@dataclass(frozen=True)
class Job:
    task: Task
    layers: tuple[int, ...]  # block indices, from 0
    folder: Path
    settings: dict  # recorded in job.json; a folder holding another job is refused
    run: Callable[[], tuple[dict, Optional[str]]]  # -> (metrics, what an earlier run had done, or None)
    protocol: dict  # the task's protocol as this job runs it (Protocol.statement), for the report


@dataclass(frozen=True)
class ProbePlan:
    request: ProbeRequest
    config: Config
    weights: Path
    random_weights: bool  # weights is a file the run draws (seeded) before its first job
    jobs: list[Job]


def plan_probe(request: ProbeRequest) -> ProbePlan:
    """Check everything the run needs and return its jobs; raises ValueError, FileNotFoundError or
    CheckpointError on a bad input. Nothing is written."""
    config = encoder_config(request.model)
    tasks = parse_tasks(request.tasks)
    data = _data_folders(request, tasks)
    layers = _layers(request.layers, config)
    if request.weights is None and not request.smoke:
        raise ValueError("--weights is needed (a checkpoint, 'hub' or hf://repo:file): a probe of random weights "
                         "measures nothing; --smoke runs without")
    random_weights = request.weights is None
    weights = request.out.resolve() / RANDOM_WEIGHTS if random_weights else check_weights(config, request.weights)
    jobs = []
    for task in tasks:
        for job_layers in ([task.protocol_layers(config)] if layers is None else [(layer,) for layer in layers]):
            folder = request.out / (task.name if layers is None else f"{task.name}_layer{job_layers[0]}")
            settings = {"task": task.name, "model": config.name, "weights": str(weights), "layers": list(job_layers),
                        "data": str(data[task.name]) if task.name in data else "built-in", "smoke": request.smoke}
            _check_job_folder(folder, settings)
            jobs.append(Job(task, job_layers, folder, settings,
                            *_runner(task, config, weights, job_layers, data.get(task.name), request, folder)))
    return ProbePlan(request, config, weights, random_weights, jobs)


def check_weights(config: Config, weights: str) -> Path:
    """The local checkpoint file of ``weights``, once it is known to load into the model (the loaders'
    own check, against a model without storage for PE: a checkpoint of another model fails here, naming
    the model it looks like; timm's loader, which converts released layouts, on the built model)."""
    if isinstance(config, TimmConfig):
        path = weights_file(config.name, weights)
        build_encoder(config.name, path)
        return path.resolve()
    path = resolve_weights(config.name, weights)
    with torch.device("meta"):
        encoder = PEVisionTransformer(config)
    load_weights(encoder, path)
    return path.resolve()


def _data_folders(request: ProbeRequest, tasks: list[Task]) -> dict[str, Path]:
    if request.smoke:
        if request.data:
            raise ValueError("--smoke runs on the built-in data: leave out --data")
        return {}
    names = {task.name for task in tasks}
    extra = sorted(set(request.data) - names)
    if extra:
        raise ValueError(f"--data names task(s) that are not run: {', '.join(extra)} (tasks: {', '.join(names)})")
    missing = [task.name for task in tasks if task.name not in request.data]
    if missing:
        raise ValueError(f"no dataset for {', '.join(missing)}: pass --data {','.join(f'{n}=PATH' for n in missing)}")
    folders = {name: Path(path).expanduser().resolve() for name, path in request.data.items()}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"the {name} dataset folder '{folder}' does not exist")
    return folders


def _layers(layers: Optional[Sequence[int]], config: Config) -> Optional[list[int]]:
    """Layers as block indices from 0 (negative ones count from the end), each once, in order."""
    if layers is None:
        return None
    bad = [layer for layer in layers if not -config.depth <= layer < config.depth]
    if bad or not layers:
        raise ValueError(f"layer(s) {bad or '(none given)'} out of range: {config.name} has {config.depth} blocks "
                         f"(layers 0..{config.depth - 1}, or -{config.depth}..-1 from the end)")
    return sorted({layer % config.depth for layer in layers})


def _check_job_folder(folder: Path, settings: dict) -> None:
    path = folder / JOB_FILE
    saved = json.loads(path.read_text()) if path.is_file() else settings
    if saved != settings:
        changed = ", ".join(f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in settings.items() if saved.get(k) != v)
        raise ValueError(f"{folder} holds a {settings['task']} probe run with other settings ({changed}); choose "
                         f"another --out")


def _runner(task: Task, config: Config, weights: Path, layers: tuple[int, ...], data: Optional[Path],
            request: ProbeRequest, folder: Path) -> tuple[Callable, dict]:
    """The job's run, its inputs checked now (the mmseg config and datasets, the DAVIS folder), and its
    protocol as it runs it."""
    if task.uses_mmseg:
        cfg = mmseg_jobs.prepare(task, config, weights, layers, data, request.smoke, request.launcher,
                                 folder.resolve())
        statement = task.protocol.statement(schedule=mmseg_jobs.schedule(cfg, request.smoke),
                                            **({"resolution": SMOKE_RESOLUTION} if request.smoke else {}))
        return partial(mmseg_jobs.run, cfg), statement
    if data is not None:
        davis_jobs.check(data)
    statement = task.protocol.statement(**({"resolution": short_side_rule(SMOKE_SHORT_SIDE)} if request.smoke else {}))
    return partial(davis_jobs.run, config.name, weights, layers[0], data, request.smoke, folder), statement


def is_main_process() -> bool:
    """Rank 0 of a distributed run (torchrun sets RANK), or a plain run."""
    return os.environ.get("RANK", "0") == "0"
