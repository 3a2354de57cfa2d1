"""``pe-dense detect``: a trained detector (a detectron2 LazyConfig: Mask R-CNN, DETA) on images, drawn, with
COCO-format results."""

from __future__ import annotations

import argparse

from .common import UsageError, check_out, config_overrides, write_manifest
from .options import add_trained_model_arguments

HELP = "run a trained detector (detectron2 LazyConfig) on images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trained_model_arguments(
        parser, "detector's LazyConfig", "detection/shapes/mask_rcnn_PEspatial_T_shapes.py",
        "trained detector checkpoint (e.g. outputs/.../model_final.pth), or hf://repo:file")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="draw detections with at least this score")


def run(args: argparse.Namespace) -> int:
    from ..data.image_sources import find_images

    try:
        from ..integrations.detectron2.predict import Detector, detect_images
    except ImportError as e:
        raise UsageError(f"detect needs detectron2, installed from its git repository (docs/install.md#detectron2): "
                         f"{e}") from None
    config_overrides(args.set)  # each KEY=VALUE; detectron2 reads them as they are written
    if not 0 <= args.score_threshold <= 1:
        raise UsageError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    sources = find_images(args.images)
    check_out(args.out, sources, ["detect.json", "detections.json"], args.force)
    detector = Detector(str(args.config), args.weights, args.set, device=args.device)
    results = detect_images(detector, sources, args.out, args.score_threshold)
    write_manifest(args.out / "detect.json", args, args.set, results)
    shown = sum(image["shown"] for image in results["images"])
    print(f"wrote {len(sources)} annotated picture(s) ({shown} detections with score >= {args.score_threshold}) "
          f"and detections.json (COCO results) to {args.out}")
    return 0
