"""``pe-dense viz``: pictures of feature maps (PCA colours, LCh, token correspondence), per layer."""

from __future__ import annotations

import argparse

from ..arguments import CommaList, positive_int
from ..atomic_files import write_json
from .common import UsageError, encoder_on_images, weights_name
from .options import (
    add_image_arguments,
    add_model_arguments,
    add_output_options,
    add_stride_argument,
    check_stride,
    numbers,
)

HELP = "pictures of feature maps: PCA colours or token correspondence, per layer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser)
    add_model_arguments(parser, "PE-Spatial-B16-512")
    parser.add_argument("--layers", action=CommaList, item=int, default=[-1], metavar="LAYER,...",
                        help="blocks to show (negative counts from the end); several give a side-by-side sweep")
    parser.add_argument("--mode", choices=("pca", "lch", "corr"), default="pca",
                        help="pca: 3 components as RGB; lch: lightness + hue/chroma; corr: similarity to one token")
    parser.add_argument("--fit", choices=("each", "first", "all"), default="each",
                        help="PCA fitted on each image, on the first (shared colours), or on all together")
    parser.add_argument("--point", type=numbers(2, "point"), metavar="X,Y",
                        help="--mode corr: query pixel in the first image (default: its centre)")
    parser.add_argument("--panel-height", type=positive_int, default=300, metavar="PIXELS",
                        help="height of each picture in the side-by-side sweep (several --layers)")
    add_stride_argument(parser)
    add_output_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..viz.pictures import write_pictures

    if args.point is not None and args.mode != "corr":
        raise UsageError("--point chooses the query token of --mode corr")
    check_stride(args)
    encoder, sources, size = encoder_on_images(args, "viz.json")
    written = write_pictures(encoder, sources, args.out, size=size, layers=args.layers, mode=args.mode, fit=args.fit,
                             point=args.point, batch_size=args.batch_size, precision=args.precision,
                             sweep_height=args.panel_height, stride=args.stride)
    write_json(args.out / "viz.json", {
        "model": args.model, "weights": weights_name(args), "mode": args.mode, "layers": args.layers,
        "fit": args.fit, "point": args.point, "stride": args.stride, "input_size": list(size), "images": written})
    count = sum(len(entry["pictures"]) + ("sweep" in entry) for entry in written)
    print(f"wrote {count} picture(s) of {len(written)} image(s) to {args.out}")
    return 0
