#!/usr/bin/env python
"""DAVIS 2017 semi-supervised evaluation by zero-shot label propagation (PE-Spatial's protocol).

Track every sequence of an image set with a PE model and score it:
    python tools/eval_davis.py --davis DAVIS --model PE-Spatial-S16-512 --weights W.pt --out results/davis
Score results that already exist (one folder of indexed PNGs per sequence):
    python tools/eval_davis.py --davis DAVIS --results my_results --out scores

Writes <out>/global_results-<set>.csv and <out>/per-sequence_results-<set>.csv and prints both tables.
An interrupted run continues where it stopped when started again with the same arguments. Under torchrun the
sequences are shared out over the processes (one per GPU: --device cuda takes each process's own):
    torchrun --standalone --nproc-per-node 8 tools/eval_davis.py --davis DAVIS --model ... --device cuda --out ...
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

from pe_dense import distributed
from pe_dense.arguments import (
    ArgumentParser,
    CommaList,
    add_precision_argument,
    check_precision_argument,
    device_argument,
)
from pe_dense.models import RandomWeightsWarning, build_encoder
from pe_dense.tracking import DavisLayout
from pe_dense.tracking.arguments import add_propagation_arguments, tracker_from_arguments
from pe_dense.tracking.evaluate import evaluate_davis, format_table


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis", type=Path, required=True, help="DAVIS root (ImageSets, JPEGImages, Annotations)")
    parser.add_argument("--set", default="val", help="image set listed in ImageSets/2017/<set>.txt")
    parser.add_argument("--sequences", action=CommaList, metavar="SEQUENCE,...", help="only these sequences")
    parser.add_argument("--resolution", default="480p")
    parser.add_argument("--results", type=Path, help="score these results instead of tracking")
    parser.add_argument("--model", help="PE model name for tracking, e.g. PE-Spatial-S16-512")
    parser.add_argument("--weights", help="checkpoint for --model (random weights if omitted, with a warning)")
    add_precision_argument(parser)
    parser.add_argument("--device", type=device_argument, default="cpu")
    add_propagation_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="tracking results and score tables go here")
    args = parser.parse_args(argv)
    if (args.results is None) == (args.model is None):
        parser.error("give either --model (track, then score) or --results (score only)")
    check_precision_argument(parser, args)
    return args


def tracker(args, world: int):
    """The tracker of --model and the settings its results record; random weights are seeded, so that every
    process of a torchrun job tracks with the same ones."""
    if args.weights is None:
        torch.manual_seed(0)
    device = f"cuda:{distributed.local_rank()}" if args.device.startswith("cuda") and world > 1 else args.device
    with warnings.catch_warnings():
        warnings.simplefilter("default", RandomWeightsWarning)
        encoder = build_encoder(args.model, args.weights, device=device)
    return tracker_from_arguments(encoder, args)


def evaluate(args, rank: int, world: int) -> None:
    layout = DavisLayout(args.davis, resolution=args.resolution)
    sequences = args.sequences or layout.sequences(args.set)
    began = time.perf_counter()
    track, settings = tracker(args, world) if args.results is None else (None, None)
    overall, per_sequence, _ = evaluate_davis(layout, sequences, args.results or args.out, args.out, tracker=track,
                                              settings=settings, image_set=args.set)
    if rank != 0:
        return
    print(f"----- global results ({args.set}, {len(sequences)} sequences) -----")
    print(format_table([overall]))
    print(f"\n----- per sequence -----\n{format_table(per_sequence)}")
    print(f"\ntables in {args.out}; {time.perf_counter() - began:.1f} s")


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, world = distributed.start()
    try:
        evaluate(args, rank, world)
    except (ValueError, FileNotFoundError) as e:
        print(f"eval_davis: error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.stop(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
