"""``pe-dense segment``: a trained segmenter (an mmsegmentation config) on images: label maps in the dataset's
palette, overlays with a legend, a manifest."""

from __future__ import annotations

import argparse

from .common import mmseg_predictor, write_manifest
from .options import add_trained_model_arguments

HELP = "run a trained segmenter (mmsegmentation config) on images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trained_model_arguments(
        parser, "segmenter's config", "segmentation/scenes/upernet_PEspatial_T_scenes.py",
        "trained checkpoint (e.g. outputs/.../iter_1000.pth)")


def run(args: argparse.Namespace) -> int:
    segmenter, sources, overrides = mmseg_predictor(args, "Segmenter", "segment.json")
    from ..integrations.mmseg.predict import segment_images

    write_manifest(args.out / "segment.json", args, overrides, segment_images(segmenter, sources, args.out))
    print(f"wrote label maps and overlays of {len(sources)} image(s) to {args.out}")
    return 0
