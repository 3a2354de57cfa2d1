"""The argument groups and types that several commands take."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import add_precision_argument, device_argument, positive_int


def numbers(count: int, kind: str):
    """An argument type: ``count`` comma-separated numbers, e.g. a point X,Y."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"a {kind} is {count} comma-separated numbers, got '{text}'")
        return values
    return parse


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, folders of images, or built-in samples (sample:astronaut, sample:chelsea, "
                             "sample:coffee)")
    parser.add_argument("--size", help="input size N or HxW, multiples of the patch size (default: the model's)")
    parser.add_argument("--batch-size", type=positive_int, default=8)


def timm_name(text: str) -> str:
    """``--encoder``: a timm model as ``timm:NAME``."""
    if not text.startswith("timm:"):
        raise argparse.ArgumentTypeError(f"expected timm:NAME, got '{text}' (PE models go to --model)")
    return text


def add_model_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help=f"model name, e.g. {example} (see `pe-dense models`)")
    # one destination: whatever reads args.model runs either encoder
    which.add_argument("--encoder", dest="model", type=timm_name, metavar="timm:NAME",
                       help="a timm ViT instead, e.g. timm:vit_base_patch14_dinov2.lvd142m (docs/comparison.md)")
    parser.add_argument("--weights", help="checkpoint file, 'hub' for the released weights, or hf://repo:file; "
                                          "random weights if omitted")
    add_precision_argument(parser)
    parser.add_argument("--device", type=device_argument, default="cpu")


def add_stride_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stride", type=positive_int, metavar="PIXELS",
                        help="a denser token grid, one token every PIXELS (a divisor of the patch size) by "
                             "shift-and-stitch: (patch/PIXELS)^2 passes of the unchanged model (docs/sharper.md)")


def check_stride(args: argparse.Namespace) -> None:
    """``--stride`` divides the model's patch size; checked before anything is built."""
    from ..models import encoder_config
    from ..models.shift_stitch import stitch_factor

    if args.stride is not None:
        stitch_factor(encoder_config(args.model).patch_size, args.stride)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="replace results of a previous run in --out")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def add_trained_model_arguments(parser: argparse.ArgumentParser, config_kind: str, config_example: str,
                                weights_help: str) -> None:
    """The arguments of the commands that run a model trained from a config on images (detect, segment,
    depth); each adds its own options."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders of images, or sample:NAME")
    parser.add_argument("--config", type=Path, required=True,
                        help=f"the {config_kind}: a file, or pe_dense:NAME for a shipped one (pe-dense configs), "
                             f"e.g. pe_dense:{config_example}")
    parser.add_argument("--weights", required=True, help=weights_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable)")
    parser.add_argument("--device", type=device_argument, default="cpu")
    add_output_options(parser)
