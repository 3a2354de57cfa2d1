"""``pe-dense convert``: a checkpoint between the official and timm layouts."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import check_out_file

HELP = "convert a checkpoint between official and timm layouts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path,
                        help="official, timm, detectron2 or CLIP checkpoint (.pt/.pth/.safetensors)")
    parser.add_argument("output", type=Path, help="output file; .safetensors writes safetensors, else torch")
    parser.add_argument("--to", choices=("official", "timm"), default="official")
    parser.add_argument("--prefix", help="key prefix of the vision tower, if the checkpoint holds several")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from ..models import official_to_timm, read_checkpoint, save_state_dict, to_official

    check_out_file(args.output, args.force, ".pt, .pth or .safetensors")
    state, ignored = to_official(read_checkpoint(args.input), args.prefix)
    if args.to == "timm":
        state = official_to_timm(state)
    save_state_dict(state, args.output)
    note = f" ({len(ignored)} keys outside the vision tower left out)" if ignored else ""
    print(f"wrote {len(state)} tensors in {args.to} layout to {args.output}{note}")
    return 0
