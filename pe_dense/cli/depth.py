"""``pe-dense depth``: a trained depth estimator (an mmsegmentation config) on images: depth in 16-bit PNGs and
.npy files, pictures, and point clouds."""

from __future__ import annotations

import argparse

from .common import UsageError, mmseg_predictor, write_manifest
from .options import add_trained_model_arguments

HELP = "run a trained depth estimator (mmsegmentation config) on images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trained_model_arguments(parser, "estimator's config", "depth/scenes/dpt_PEspatial_T_scenes.py",
                                "trained checkpoint (e.g. outputs/.../iter_600.pth)")
    parser.add_argument("--ply", action="store_true", help="also write each image's point cloud (binary PLY)")
    parser.add_argument("--focal", type=float, help="the point cloud camera's focal length in pixels (default: "
                                                    "the training dataset's declared one, else NYU-Depth-v2's, "
                                                    "518.86 px at 640 wide, scaled to the image width)")


def run(args: argparse.Namespace) -> int:
    if args.focal is not None and not args.focal > 0:
        raise UsageError(f"--focal is a focal length in pixels and must be positive, got {args.focal}")
    if args.focal is not None and not args.ply:
        raise UsageError("--focal sets the point cloud's camera: pass --ply too")
    predictor, sources, overrides = mmseg_predictor(args, "DepthPredictor", "depth.json")
    from ..integrations.mmseg.depth_files import estimate_depth_images

    results = estimate_depth_images(predictor, sources, args.out, ply=args.ply, focal=args.focal)
    write_manifest(args.out / "depth.json", args, overrides, results)
    extra = ", point clouds" if args.ply else ""
    print(f"wrote depth maps (16-bit PNG in mm, .npy in m), pictures{extra} of {len(sources)} image(s) to {args.out}")
    return 0
