"""``pe-dense export``: the encoder as ONNX or a torch.export ExportedProgram, checked against PyTorch before it
is written."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import CommaList
from ..atomic_files import write_json
from .common import build_encoder, check_out_file, weights_name

HELP = "the encoder as ONNX or a torch.export ExportedProgram, checked against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export import FORMATS

    parser.add_argument("model", metavar="MODEL", help="model name, e.g. PE-Spatial-S16-512 (see `pe-dense models`)")
    parser.add_argument("--weights", help="checkpoint file, 'hub' for the released weights, or hf://repo:file; "
                                          "random weights if omitted")
    parser.add_argument("--format", choices=FORMATS, required=True,
                        help="onnx, or exported-program (.pt2, torch.export.load)")
    parser.add_argument("--size", required=True, help="input size N or HxW, multiples of the patch size (with "
                                                      "--dynamic: the size traced and checked)")
    parser.add_argument("--layers", action=CommaList, item=int, default=[-1], metavar="LAYER,...",
                        help="blocks whose dense maps are outputs (negative counts from the end)")
    parser.add_argument("--pooled", action="store_true", help="also output the CLIP embedding (PE-Core models)")
    parser.add_argument("--dynamic", action="store_true", help="any height and width that are multiples of the "
                                                               "patch size, not only --size (the batch size is always "
                                                               "free)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--out", type=Path, required=True, help="output file, e.g. model.onnx; FILE.json beside it "
                                                                "describes it")
    parser.set_defaults(device="cpu")  # traced and checked on the CPU


def run(args: argparse.Namespace) -> int:
    from ..export import check_request, export_encoder
    from ..models import get_config
    from ..models.preprocess import parse_size

    config = get_config(args.model)
    size = parse_size(args.size, config.image_size)
    manifest_path = args.out.with_name(f"{args.out.name}.json")
    for path in (args.out, manifest_path):
        check_out_file(path, args.force, "e.g. model.onnx or model.pt2")
    check_request(config, args.format, size, args.layers, args.pooled)
    manifest = export_encoder(build_encoder(args), args.out, format=args.format, size=size, layers=args.layers,
                              pooled=args.pooled, dynamic=args.dynamic)
    write_json(manifest_path, {"model": args.model, "weights": weights_name(args), **manifest})
    check = manifest["check"]
    print(f"wrote {args.out} and {manifest_path.name}; run in {check['runtime']}, it agrees with PyTorch to "
          f"{check['max_abs_diff']:.1e}")
    return 0
