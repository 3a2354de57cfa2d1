"""``pe-dense probe``: the PE paper's frozen-feature table (ADE20k linear segmentation, NYU depth, DAVIS label
propagation) for a PE model or any timm ViT under the same protocols, beside the published numbers; resumable,
with layer sweeps; finished runs merged into one comparison table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import CommaList
from .common import UsageError, check_out_folder, shout

HELP = ("the PE paper's frozen-feature table: ADE20k linear segmentation, NYU depth, DAVIS label propagation, "
        "for PE or any timm ViT, beside the published numbers")
RESUME_HINT = " (run the same command again to continue)"


def task_path(text: str) -> tuple[str, str]:
    """One TASK=PATH of ``--data``."""
    key, sep, path = text.partition("=")
    if not key.strip() or not sep or not path.strip():
        raise argparse.ArgumentTypeError(f"expected TASK=PATH[,TASK=PATH...], got '{text}'")
    return key.strip(), path.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..probe import TASKS

    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="PE model name, e.g. PE-Spatial-B16-512 (its size picks the configs)")
    which.add_argument("--encoder", metavar="timm:NAME",
                       help="a timm ViT under the same protocols, e.g. timm:vit_base_patch14_dinov2.lvd142m (needs "
                            "timm: pip install 'pe_dense[timm]')")
    which.add_argument("--compare", nargs="+", type=Path, metavar="DIR",
                       help="merge the tables of finished runs (their --out folders) into one in --out, without "
                            "running anything")
    parser.add_argument("--weights", help="encoder checkpoint (any layout pe_dense reads, e.g. tools/align_net.py's "
                                          "student_final.pt; for timm, a file timm loads), 'hub' (timm: its "
                                          "release) or hf://repo:file; --smoke without it: random weights")
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
    if args.compare:
        return _compare(args, layers)
    if args.encoder is not None and not args.encoder.startswith("timm:"):
        raise UsageError(f"--encoder takes timm:NAME, got '{args.encoder}' (PE models go to --model)")
    model = args.model or args.encoder
    request = ProbeRequest(model=model, out=args.out, weights=args.weights, tasks=args.tasks,
                           data=dict(args.data or ()), layers=layers, smoke=args.smoke, launcher=args.launcher)
    plan = plan_probe(request)  # every input checked; nothing written yet
    if plan.random_weights:
        shout(f"WARNING: {model} has RANDOM weights (seed 0; no --weights given): the table shows the mechanics "
              f"only")
    table = run_probe(plan)
    if table is not None:  # the main process of a distributed run
        print(f"{table}\nthe table is in {args.out} (probe.md, probe.csv, probe.json)")
    return 0


def _compare(args: argparse.Namespace, layers) -> int:
    from ..probe.report import read_run, write_report

    if args.weights or args.data or args.smoke or layers or args.launcher != "none":
        raise UsageError("--compare merges finished runs: it takes their folders and --out only")
    runs = [read_run(folder) for folder in args.compare]  # all checked before anything is written
    table = write_report(args.out, runs)
    print(f"{table}\nthe comparison is in {args.out} (probe.md, probe.csv, probe.json, probe_compare.png)")
    return 0
