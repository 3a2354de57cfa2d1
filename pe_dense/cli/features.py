"""``pe-dense features``: dense features and a PCA picture per image."""

from __future__ import annotations

import argparse

from ..atomic_files import write_json
from .common import encoder_on_images, weights_name
from .options import add_image_arguments, add_model_arguments, add_output_options, add_stride_argument, check_stride

HELP = "save dense features and a PCA picture per image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser)
    add_model_arguments(parser, "PE-Spatial-B16-512")
    parser.add_argument("--layer", type=int, default=-1,
                        help="block whose output to save (negative counts from the end)")
    add_stride_argument(parser)
    add_output_options(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..feature_extraction import iter_features, save_outputs

    check_stride(args)
    encoder, sources, size = encoder_on_images(args, "features.json")
    encoder.layer_index(args.layer)  # fail before any work
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    results = iter_features(encoder, sources, size=size, layer=args.layer, batch_size=args.batch_size,
                            precision=args.precision, stride=args.stride)
    for source, image, features in tqdm(results, total=len(sources), unit="image", disable=len(sources) < 2):
        written.append(save_outputs(args.out, source.name, image, features))
    write_json(args.out / "features.json", {"model": args.model, "weights": weights_name(args), "layer": args.layer,
                                            "stride": args.stride, "input_size": list(size), "images": written})
    print(f"wrote features and PCA pictures of {len(written)} image(s) to {args.out}")
    return 0
