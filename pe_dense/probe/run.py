"""Running a checked plan (:func:`pe_dense.probe.plan.plan_probe`): each job in turn, skipping those a
previous run finished (their result.json) and continuing an interrupted one from its checkpoint (mmseg)
or its last tracked sequence (DAVIS); then the report. The encoder's throughput is measured once, first,
while the process holds little else (its resident memory then tells the encoder's own on a CPU)."""

from __future__ import annotations

import json
import time
import warnings
from typing import Optional

import torch

from ..atomic_files import write_json
from ..models import RandomWeightsWarning, build_encoder, save_state_dict
from ..models.timm_encoder import checkpoint_state
from . import throughput
from .plan import JOB_FILE, RANDOM_SEED, RESULT_FILE, ProbePlan, is_main_process
from .report import make_row, run_summary, write_report

ENCODER_FILE = "encoder.json"  # the encoder's size and throughput, measured once per --out


def _draw_random_weights(plan: ProbePlan) -> None:
    """Seeded random weights in a file, so that every task (and a resumed run) probes the same encoder."""
    if plan.weights.is_file():
        return
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the command line says it loudly
        torch.manual_seed(RANDOM_SEED)
        save_state_dict(checkpoint_state(build_encoder(plan.config.name)), plan.weights)


def _measure_encoder(plan: ProbePlan) -> dict:
    """The encoder's parameters and throughput at the protocol's resolution, measured by the first run and
    reused by any later one."""
    path = plan.request.out / ENCODER_FILE
    if not path.is_file():
        print(f"throughput of {plan.config.name} at the protocol's resolution", flush=True)
        speed, parameters = throughput.measure(plan.config, plan.weights, plan.request.smoke)
        write_json(path, {"parameters": parameters, "throughput": speed})
    return json.loads(path.read_text())


def run_probe(plan: ProbePlan) -> Optional[str]:
    """Run the plan's jobs and write the report in ``--out``; the Markdown table on the main process, None
    on the others (which only join the distributed training)."""
    out, main = plan.request.out, is_main_process()
    out.mkdir(parents=True, exist_ok=True)
    if plan.random_weights:
        _draw_random_weights(plan)
    encoder = _measure_encoder(plan) if main else None
    rows, protocol = [], {}
    for i, job in enumerate(plan.jobs, 1):
        title = f"[{i}/{len(plan.jobs)}] {job.task.name}, layers {','.join(map(str, job.layers))}"
        protocol[job.task.name] = job.protocol
        if (job.folder / RESULT_FILE).is_file():
            print(f"{title}: finished earlier ({job.folder / RESULT_FILE})", flush=True)
            rows.append(json.loads((job.folder / RESULT_FILE).read_text()))
            continue
        if not job.task.uses_mmseg and not main:
            continue  # propagation runs on one process
        print(f"{title}: running in {job.folder}", flush=True)
        job.folder.mkdir(parents=True, exist_ok=True)
        if main:
            write_json(job.folder / JOB_FILE, job.settings)
        began = time.perf_counter()
        metrics, resumed = job.run()
        row = make_row(job.task.name, plan.config.name, plan.request.smoke, job.layers, metrics,
                       time.perf_counter() - began, resumed)
        if main:
            write_json(job.folder / RESULT_FILE, row)
        rows.append(row)
    if not main:
        return None
    weights = f"random (seed {RANDOM_SEED})" if plan.random_weights else str(plan.weights)
    summary = run_summary(plan.config.name, weights, plan.request.smoke, encoder["parameters"], protocol,
                          encoder["throughput"], rows)
    return write_report(out, [summary])
