"""``pe-dense track``: objects through a video by label propagation (the DAVIS protocol), from a first-frame
mask or from boxes and clicks segmented with SAM."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..tracking.arguments import add_propagation_arguments, tracker_from_arguments
from .common import UsageError, build_encoder, check_out_folder
from .options import add_model_arguments, numbers

HELP = "track objects through a video by label propagation (DAVIS protocol)"
RESUME_HINT = " (run it again with --resume to continue)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, metavar="VIDEO", help="video file (mp4, webm, mkv...) or folder of frames")
    parser.add_argument("--mask", type=Path, help="first-frame labels as a PNG: indexed (as DAVIS), binary "
                                                  "(greyscale with two values), greyscale or 16-bit label ids, or "
                                                  "flat RGB colours, one per object")
    parser.add_argument("--box", type=numbers(4, "box"), action="append", default=[], metavar="X0,Y0,X1,Y1",
                        help="object box in the first frame, segmented with SAM (repeat for more objects)")
    parser.add_argument("--point", type=numbers(2, "point"), action="append", default=[], metavar="X,Y",
                        help="a click on an object in the first frame, segmented with SAM (repeat for more)")
    parser.add_argument("--sam-checkpoint", type=Path, help="Segment Anything checkpoint for --box/--point")
    parser.add_argument("--sam-model", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    add_model_arguments(parser, "PE-Spatial-S16-512")
    add_propagation_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    parser.add_argument("--out", type=Path, required=True, help="output folder (DAVIS layout: one PNG per frame)")


def run(args: argparse.Namespace) -> int:
    from ..tracking import VideoFrames, davis_palette, track_video

    if (args.mask is None) == (not args.box and not args.point):
        raise UsageError("give the first-frame labels either as --mask or as --box/--point prompts")
    if (args.box or args.point) and args.sam_checkpoint is None:
        raise UsageError("--box/--point prompts need --sam-checkpoint (a Segment Anything checkpoint)")
    if args.resume and not args.weights:
        raise UsageError("--resume needs --weights: without them every run draws other random weights, so the "
                         "resumed frames would come from another model")
    check_out_folder(args.out)  # track has its own rules for a folder with results: finished, or resumable
    mask = args.mask
    if mask is None:
        from ..integrations.sam import load_sam, mask_from_prompts

        predictor = load_sam(args.sam_checkpoint, args.sam_model, device=args.device)
        mask = (mask_from_prompts(predictor, VideoFrames(args.video).first(), args.box, args.point), davis_palette())
    tracker, settings = tracker_from_arguments(build_encoder(args), args)
    summary = track_video(tracker, args.video, mask, args.out, settings=settings, resume=args.resume,
                          overlay=not args.no_overlay)
    fps = f" ({summary['fps']} frames/s)" if summary["fps"] else ""
    print(f"tracked {summary['tracked_now']} of {summary['frames']} frames in {summary['seconds']} s{fps}; "
          f"labels and overlay in {args.out}")
    return 0
