"""``pe-dense probe``: the PE paper's frozen-feature table (ADE20k linear segmentation, NYU depth, DAVIS label
propagation) beside the published numbers; resumable, with layer sweeps."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import CommaList
from .common import check_out_folder, shout

HELP = ("the PE paper's frozen-feature table: ADE20k linear segmentation, NYU depth, DAVIS label propagation, "
        "beside the published numbers")
RESUME_HINT = " (run the same command again to continue)"


def task_path(text: str) -> tuple[str, str]:
    """One TASK=PATH of ``--data``."""
    key, sep, path = text.partition("=")
    if not key.strip() or not sep or not path.strip():
        raise argparse.ArgumentTypeError(f"expected TASK=PATH[,TASK=PATH...], got '{text}'")
    return key.strip(), path.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..probe import TASKS

    parser.add_argument("--model", required=True,
                        help="model name, e.g. PE-Spatial-B16-512 (its size picks the configs)")
    parser.add_argument("--weights", help="encoder checkpoint (any layout pe_dense reads, e.g. tools/align_net.py's "
                                          "student_final.pt), 'hub' or hf://repo:file; --smoke without it: random "
                                          "weights")
    parser.add_argument("--tasks", action=CommaList, default=list(TASKS), metavar="TASK,...",
                        help=f"some of {','.join(TASKS)} (default: all)")
    parser.add_argument("--data", action=CommaList, item=task_path, metavar="TASK=PATH,...",
                        help="the dataset folder of each task: ADE20k (ADEChallengeData2016), NYU-Depth-v2 in "
                             "mmsegmentation's layout, DAVIS 2017")
    layer = parser.add_mutually_exclusive_group()
    layer.add_argument("--layer", type=int, help="the block every task reads (default: each protocol's: the last "
                                                 "block, four blocks for depth)")
    layer.add_argument("--layers", action=CommaList, item=int, metavar="L,...",
                       help="a layer sweep: every task at each of these blocks, plus a plot of metric vs layer")
    parser.add_argument("--smoke", action="store_true",
                        help="a few iterations on the built-in data (no datasets needed)")
    parser.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                        help="pytorch: distributed training under torchrun (mmengine's launcher)")
    parser.add_argument("--out", type=Path, required=True, help="output folder; run the same command again to resume")


def run(args: argparse.Namespace) -> int:
    from ..probe import ProbeRequest, plan_probe, run_probe

    check_out_folder(args.out)
    layers = [args.layer] if args.layer is not None else args.layers
    request = ProbeRequest(model=args.model, out=args.out, weights=args.weights, tasks=args.tasks,
                           data=dict(args.data or ()), layers=layers, smoke=args.smoke, launcher=args.launcher)
    plan = plan_probe(request)  # every input checked; nothing written yet
    if plan.random_weights:
        shout(f"WARNING: {args.model} has RANDOM weights (seed 0; no --weights given): the table shows the "
              f"mechanics only")
    table = run_probe(plan)
    if table is not None:  # the main process of a distributed run
        print(f"{table}\nthe table is in {args.out} (probe.md, probe.csv, probe.json)")
    return 0
