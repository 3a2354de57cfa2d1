"""Running a checked plan (:func:`pe_dense.probe.plan.plan_probe`): each job in turn, skipping those a
previous run finished (their result.json) and continuing an interrupted one from its checkpoint (mmseg)
or its last tracked sequence (DAVIS); then the report."""

from __future__ import annotations

import json
import time
import warnings
from typing import Optional

import torch

from ..atomic_files import write_json
from ..models import RandomWeightsWarning, build_encoder, save_state_dict
from .plan import JOB_FILE, RANDOM_SEED, RESULT_FILE, ProbePlan, is_main_process
from .report import make_row, write_report


def _draw_random_weights(plan: ProbePlan) -> None:
    """Seeded random weights in a file, so that every task (and a resumed run) probes the same encoder."""
    if plan.weights.is_file():
        return
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the command line says it loudly
        torch.manual_seed(RANDOM_SEED)
        save_state_dict(build_encoder(plan.config.name).state_dict(), plan.weights)


def run_probe(plan: ProbePlan) -> Optional[str]:
    """Run the plan's jobs and write the report in ``--out``; the Markdown table on the main process, None
    on the others (which only join the distributed training)."""
    out, main = plan.request.out, is_main_process()
    out.mkdir(parents=True, exist_ok=True)
    if plan.random_weights:
        _draw_random_weights(plan)
    rows = []
    for i, job in enumerate(plan.jobs, 1):
        title = f"[{i}/{len(plan.jobs)}] {job.task.name}, layers {','.join(map(str, job.layers))}"
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
    return write_report(out, plan.config.name, weights, plan.request.smoke, rows)
