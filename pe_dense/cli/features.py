"""``pe-dense features``: dense features and a PCA picture per image."""

from __future__ import annotations

import argparse

from ..atomic_files import write_json
from .common import build_encoder, check_out, warn_if_huge, weights_name
from .options import add_image_arguments, add_model_arguments, add_output_options

HELP = "save dense features and a PCA picture per image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser)
    add_model_arguments(parser, "PE-Spatial-B16-512")
    parser.add_argument("--layer", type=int, default=-1,
                        help="block whose output to save (negative counts from the end)")
    add_output_options(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.image_sources import find_images
    from ..feature_extraction import iter_features, save_outputs
    from ..models import get_config
    from ..models.preprocess import parse_size

    config = get_config(args.model)
    sources = find_images(args.images)
    size = parse_size(args.size, config.image_size)
    check_out(args.out, sources, ["features.json"], args.force)
    warn_if_huge(config, size, args.batch_size)
    encoder = build_encoder(args)
    encoder.token_grid(*size)  # fail before any work
    encoder.layer_index(args.layer)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    results = iter_features(encoder, sources, size=size, layer=args.layer, batch_size=args.batch_size,
                            precision=args.precision)
    for source, image, features in tqdm(results, total=len(sources), unit="image", disable=len(sources) < 2):
        written.append(save_outputs(args.out, source.name, image, features))
    write_json(args.out / "features.json", {"model": args.model, "weights": weights_name(args), "layer": args.layer,
                                            "input_size": list(size), "images": written})
    print(f"wrote features and PCA pictures of {len(written)} image(s) to {args.out}")
    return 0
