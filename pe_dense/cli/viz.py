"""``pe-dense viz``: pictures of feature maps per layer (PCA colours, LCh, foreground-only PCA, token
correspondence, attention maps, token norms)."""

from __future__ import annotations

import argparse
from pathlib import Path

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

HELP = "pictures of feature maps per layer: PCA colours, token correspondence, attention, token norms"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser)
    add_model_arguments(parser, "PE-Spatial-B16-512")
    parser.add_argument("--layers", action=CommaList, item=int, default=[-1], metavar="LAYER,...",
                        help="blocks to show (negative counts from the end); several give a side-by-side sweep")
    parser.add_argument("--mode", choices=("pca", "lch", "corr", "attention", "norms"), default="pca",
                        help="pca: 3 components as RGB; lch: lightness + hue/chroma; corr: similarity to one token; "
                             "attention: what one token attends to (per head and averaged); norms: token norms "
                             "with the outliers ringed")
    parser.add_argument("--fit", choices=("each", "first", "all", "foreground"), default="each",
                        help="PCA fitted on each image, on the first (shared colours), on all together, or on each "
                             "image's foreground (its mask written as a PNG)")
    parser.add_argument("--mask", type=Path, metavar="PNG",
                        help="--fit foreground: the foreground (non-zero pixels) of every image, instead of the "
                             "first principal component's")
    parser.add_argument("--point", type=numbers(2, "point"), metavar="X,Y",
                        help="--mode corr and attention: query pixel in the first image (default: its centre for "
                             "corr, the class token for attention)")
    parser.add_argument("--upsample", choices=("bilinear", "guided"), default="bilinear",
                        help="how token maps reach the image's pixels: bilinear, or guided by the image's edges "
                             "(joint bilateral)")
    parser.add_argument("--panel-height", type=positive_int, default=300, metavar="PIXELS",
                        help="height of each picture in the side-by-side sweep (several --layers)")
    add_stride_argument(parser)
    add_output_options(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..models import is_timm_name
    from ..models.preprocess import load_image
    from ..viz.pictures import check_options, write_pictures

    check_options(args.mode, args.fit, args.upsample, args.stride, args.mask, args.point)
    check_stride(args)
    if args.mode == "attention" and is_timm_name(args.model):
        raise UsageError(f"--mode attention reads PE's own blocks; {args.model} is a timm model")
    mask = None if args.mask is None else np.asarray(load_image(args.mask).convert("L")) > 0
    encoder, sources, size = encoder_on_images(args, "viz.json")
    written = write_pictures(encoder, sources, args.out, size=size, layers=args.layers, mode=args.mode, fit=args.fit,
                             point=args.point, batch_size=args.batch_size, precision=args.precision,
                             sweep_height=args.panel_height, stride=args.stride, upsampling=args.upsample,
                             mask=mask)
    write_json(args.out / "viz.json", {
        "model": args.model, "weights": weights_name(args), "mode": args.mode, "layers": args.layers,
        "fit": args.fit, "point": args.point, "stride": args.stride, "upsample": args.upsample,
        "mask": None if args.mask is None else str(args.mask), "input_size": list(size), "images": written})
    count = sum(len(entry["pictures"]) + ("sweep" in entry) for entry in written)
    print(f"wrote {count} picture(s) of {len(written)} image(s) to {args.out}")
    return 0
