"""The ``pe-dense`` command: ``features``, ``viz``, ``track``, ``detect``, ``segment``, ``depth``, ``probe``,
``convert``, ``export``, ``models``."""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .atomic_files import atomic_output

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


class UsageError(Exception):
    """A problem with the command line or its inputs, reported without a traceback."""


def _shout(message: str) -> None:
    bar = "!" * min(100, len(message) + 4)
    print(f"{bar}\n! {message}\n{bar}", file=sys.stderr)


def _build(args):
    from .models import RandomWeightsWarning, build_encoder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        encoder = build_encoder(args.model, args.weights, device=args.device)
    for w in caught:
        if issubclass(w.category, RandomWeightsWarning):
            _shout(f"WARNING: {args.model} has RANDOM weights (no --weights given): outputs are meaningless")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return encoder


def _warn_if_huge(config, size: tuple[int, int], batch_size: int) -> None:
    """A loud note when the input has far more tokens than the model was trained at: attention grows
    with the square of the token count, so such a run can take very long with no output."""
    tokens = (size[0] // config.patch_size) * (size[1] // config.patch_size)
    native = config.pretrain_grid**2
    if tokens > 16 * native:
        activations = batch_size * tokens * config.mlp_width * 8 / 2**30  # the MLP's hidden layer, float32, x2
        _shout(f"NOTE: {size[0]}x{size[1]} is {tokens} tokens, {tokens / native:.0f}x the {native} {config.name} was "
               f"trained at: about {(tokens / native) ** 2:.0f}x the attention work of the native size per image, "
               f"and {activations:.1f} GiB of activations per batch of {batch_size}; this may take very long")


# ---------------------------------------------------------------- output folders
def _check_out_folder(out: Path) -> None:
    """``--out`` is a writable folder, or one that can be made."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    existing_parent = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing_parent, os.W_OK):
        raise UsageError(f"cannot write to {existing_parent}: permission denied")


def _check_out(out: Path, sources, fixed: Sequence[str], force: bool) -> None:
    """The rule of every command that writes per-image results: ``--out`` is a writable folder (or can be
    made), and results already in it, the command's own files (``fixed``) or files named after this
    run's images, are replaced only with ``--force``. Checked before anything is built or written."""
    _check_out_folder(out)
    if force or not out.is_dir():
        return
    names = [source.name for source in sources]
    clash = sorted(p.name for p in out.iterdir() if p.name in fixed or any(
        p.name.startswith((f"{name}.", f"{name}_")) for name in names))
    if clash:
        shown = ", ".join(clash[:6]) + (f", ... ({len(clash) - 6} more)" if len(clash) > 6 else "")
        raise UsageError(f"{out} already holds results this run would replace ({shown}); pass --force to replace "
                         "them")


# ---------------------------------------------------------------- features
def _features(args) -> int:
    from tqdm import tqdm

    from .data.image_sources import find_images
    from .feature_extraction import iter_features, parse_size, save_outputs
    from .models import get_config

    config = get_config(args.model)
    sources = find_images(args.images)
    size = parse_size(args.size, config.image_size)
    _check_out(args.out, sources, ["features.json"], args.force)
    _warn_if_huge(config, size, args.batch_size)
    encoder = _build(args)
    encoder.token_grid(*size)  # fail before any work
    encoder.layer_index(args.layer)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    results = iter_features(encoder, sources, size=size, layer=args.layer, batch_size=args.batch_size,
                            precision=args.precision)
    for source, image, features in tqdm(results, total=len(sources), unit="image", disable=len(sources) < 2):
        written.append(save_outputs(args.out, source.name, image, features))
    manifest = {
        "model": args.model, "weights": str(args.weights) if args.weights else "random", "layer": args.layer,
        "input_size": list(size), "images": written,
    }
    with atomic_output(args.out / "features.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    print(f"wrote features and PCA pictures of {len(written)} image(s) to {args.out}")
    return 0


# ---------------------------------------------------------------- viz
def _viz(args) -> int:
    from .data.image_sources import find_images
    from .feature_extraction import parse_size
    from .models import get_config
    from .viz.pictures import write_pictures

    if args.point is not None and args.mode != "corr":
        raise UsageError("--point chooses the query token of --mode corr")
    config = get_config(args.model)
    sources = find_images(args.images)
    size = parse_size(args.size, config.image_size)
    _check_out(args.out, sources, ["viz.json"], args.force)
    _warn_if_huge(config, size, args.batch_size)
    encoder = _build(args)
    encoder.token_grid(*size)  # fail before any work
    written = write_pictures(encoder, sources, args.out, size=size, layers=args.layers, mode=args.mode, fit=args.fit,
                             point=args.point, batch_size=args.batch_size, precision=args.precision,
                             sweep_height=args.panel_height)
    manifest = {
        "model": args.model, "weights": str(args.weights) if args.weights else "random", "mode": args.mode,
        "layers": args.layers, "fit": args.fit, "point": args.point, "input_size": list(size), "images": written,
    }
    with atomic_output(args.out / "viz.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    count = sum(len(entry["pictures"]) + ("sweep" in entry) for entry in written)
    print(f"wrote {count} picture(s) of {len(written)} image(s) to {args.out}")
    return 0


# ---------------------------------------------------------------- track
def _track(args) -> int:
    from .tracking import VideoFrames, davis_palette, track_video

    if (args.mask is None) == (not args.box and not args.point):
        raise UsageError("give the first-frame labels either as --mask or as --box/--point prompts")
    if (args.box or args.point) and args.sam_checkpoint is None:
        raise UsageError("--box/--point prompts need --sam-checkpoint (a Segment Anything checkpoint)")
    if args.resume and not args.weights:
        raise UsageError("--resume needs --weights: without them every run draws other random weights, so the "
                         "resumed frames would come from another model")
    _check_out_folder(args.out)  # track has its own rules for a folder with results: finished, or resumable
    mask = args.mask
    if mask is None:
        from .integrations.sam import load_sam, mask_from_prompts

        predictor = load_sam(args.sam_checkpoint, args.sam_model, device=args.device)
        mask = (mask_from_prompts(predictor, VideoFrames(args.video).first(), args.box, args.point), davis_palette())
    encoder = _build(args)
    tracker, settings = tracker_from_arguments(encoder, args)
    summary = track_video(tracker, args.video, mask, args.out, settings=settings, resume=args.resume,
                          overlay=not args.no_overlay)
    fps = f" ({summary['fps']} frames/s)" if summary["fps"] else ""
    print(f"tracked {summary['tracked_now']} of {summary['frames']} frames in {summary['seconds']} s{fps}; "
          f"labels and overlay in {args.out}")
    return 0


# ---------------------------------------------------------------- detect
def _detect(args) -> int:
    from .data.image_sources import find_images

    try:
        from .integrations.detectron2.predict import Detector, detect_images
    except ImportError as e:
        raise UsageError(f"detect needs detectron2, installed from its git repository (see the README): {e}") from None
    bad = [pair for pair in args.set if "=" not in pair]
    if bad:
        raise UsageError(f"--set takes KEY=VALUE, got {bad}")
    if not 0 <= args.score_threshold <= 1:
        raise UsageError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    sources = find_images(args.images)
    _check_out(args.out, sources, ["detect.json", "detections.json"], args.force)
    detector = Detector(str(args.config), args.weights, args.set, device=args.device)
    manifest = detect_images(detector, sources, args.out, args.score_threshold)
    manifest = {"config": str(args.config), "weights": args.weights, "overrides": args.set, **manifest}
    with atomic_output(args.out / "detect.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    shown = sum(image["shown"] for image in manifest["images"])
    print(f"wrote {len(sources)} annotated picture(s) ({shown} detections with score >= {args.score_threshold}) "
          f"and detections.json (COCO results) to {args.out}")
    return 0


# ---------------------------------------------------------------- segment, depth
def _config_overrides(pairs: Sequence[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set takes KEY=VALUE, got '{pair}'")
        try:
            overrides[key] = ast.literal_eval(value)  # numbers, tuples, None, quoted strings
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def _mmseg_model(args, manifest_name: str):
    """The Segmenter or DepthPredictor (as ``args.command`` says) of ``args.config`` and ``args.weights``,
    the images and the config overrides, once the output folder and the images are checked."""
    from .data.image_sources import find_images

    try:
        from .integrations.mmseg import predict
    except ImportError as e:
        raise UsageError(f"{args.command} needs mmsegmentation, mmengine and mmcv (see the README): {e}") from None
    overrides = _config_overrides(args.set)
    sources = find_images(args.images)
    _check_out(args.out, sources, [manifest_name], args.force)
    kind = predict.Segmenter if args.command == "segment" else predict.DepthPredictor
    return kind(str(args.config), args.weights, overrides, device=args.device), sources, overrides


def _write_manifest(path: Path, args, overrides: dict, results: dict) -> None:
    manifest = {"config": str(args.config), "weights": args.weights, "overrides": overrides, **results}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))


def _segment(args) -> int:
    segmenter, sources, overrides = _mmseg_model(args, "segment.json")
    from .integrations.mmseg.predict import segment_images

    _write_manifest(args.out / "segment.json", args, overrides, segment_images(segmenter, sources, args.out))
    print(f"wrote label maps and overlays of {len(sources)} image(s) to {args.out}")
    return 0


def _depth(args) -> int:
    if args.focal is not None and not args.focal > 0:
        raise UsageError(f"--focal is a focal length in pixels and must be positive, got {args.focal}")
    if args.focal is not None and not args.ply:
        raise UsageError("--focal sets the point cloud's camera: pass --ply too")
    predictor, sources, overrides = _mmseg_model(args, "depth.json")
    from .integrations.mmseg.depth_files import estimate_depth_images

    results = estimate_depth_images(predictor, sources, args.out, ply=args.ply, focal=args.focal)
    _write_manifest(args.out / "depth.json", args, overrides, results)
    extra = ", point clouds" if args.ply else ""
    print(f"wrote depth maps (16-bit PNG in mm, .npy in m), pictures{extra} of {len(sources)} image(s) to {args.out}")
    return 0


def _numbers(count: int, kind: str):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"a {kind} is {count} comma-separated numbers, got '{text}'")
        return values
    return parse


# ---------------------------------------------------------------- probe
def _probe(args) -> int:
    from .probe import ProbeRequest, plan_probe, run_probe

    _check_out_folder(args.out)
    layers = [args.layer] if args.layer is not None else args.layers
    request = ProbeRequest(model=args.model, out=args.out, weights=args.weights, tasks=args.tasks,
                           data=args.data or {}, layers=layers, smoke=args.smoke, launcher=args.launcher)
    plan = plan_probe(request)  # every input checked; nothing written yet
    if plan.random_weights:
        _shout(f"WARNING: {args.model} has RANDOM weights (seed 0; no --weights given): the table shows the "
               f"mechanics only")
    table = run_probe(plan)
    if table is not None:  # the main process of a distributed run
        print(f"{table}\nthe table is in {args.out} (probe.md, probe.csv, probe.json)")
    return 0


def _key_paths(text: str) -> dict[str, str]:
    """``--data``: TASK=PATH pairs, comma-separated."""
    pairs = [item.partition("=") for item in text.split(",") if item]
    if not pairs or any(not key or not sep or not path for key, sep, path in pairs):
        raise argparse.ArgumentTypeError(f"expected TASK=PATH[,TASK=PATH...], got '{text}'")
    return {key.strip(): path.strip() for key, _, path in pairs}


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _integers(text: str) -> list[int]:
    try:
        return [int(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


# ---------------------------------------------------------------- convert
def _check_out_file(path: Path, force: bool, kinds: str) -> None:
    """An output file (``convert``, ``export``): not a folder, replaced only with --force, in a writable folder
    that exists. Checked before anything is built or written."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder; name the output file ({kinds})")
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise UsageError(f"the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"cannot write to {path.parent}: permission denied")


def _convert(args) -> int:
    from .models import official_to_timm, read_checkpoint, save_state_dict, to_official

    _check_out_file(args.output, args.force, ".pt, .pth or .safetensors")
    state, ignored = to_official(read_checkpoint(args.input), args.prefix)
    if args.to == "timm":
        state = official_to_timm(state)
    save_state_dict(state, args.output)
    note = f" ({len(ignored)} keys outside the vision tower left out)" if ignored else ""
    print(f"wrote {len(state)} tensors in {args.to} layout to {args.output}{note}")
    return 0


# ---------------------------------------------------------------- export
def _export(args) -> int:
    from .export import check_request, export_encoder
    from .feature_extraction import parse_size
    from .models import get_config

    config = get_config(args.model)
    size = parse_size(args.size, config.image_size)
    manifest_path = args.out.with_name(f"{args.out.name}.json")
    for path in (args.out, manifest_path):
        _check_out_file(path, args.force, "e.g. model.onnx or model.pt2")
    check_request(config, args.format, size, args.layers, args.pooled)
    encoder = _build(args)
    manifest = export_encoder(encoder, args.out, format=args.format, size=size, layers=args.layers,
                              pooled=args.pooled, dynamic=args.dynamic)
    manifest = {"model": args.model, "weights": str(args.weights) if args.weights else "random", **manifest}
    with atomic_output(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    check = manifest["check"]
    print(f"wrote {args.out} and {manifest_path.name}; run in {check['runtime']}, it agrees with PyTorch to "
          f"{check['max_abs_diff']:.1e}")
    return 0


# ---------------------------------------------------------------- models
def _models(args) -> int:
    from .models import MODEL_CONFIGS

    print(f"{'name':<26}{'family':<9}{'patch':>6}{'width':>7}{'depth':>7}{'image':>7}  head")
    for name, c in MODEL_CONFIGS.items():
        head = f"attn pool -> {c.output_dim}" if c.pool else "-"
        print(f"{name:<26}{c.family:<9}{c.patch_size:>6}{c.width:>7}{c.depth:>7}{c.image_size:>7}  {head}")
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got '{text}'")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def add_propagation_arguments(p: argparse.ArgumentParser) -> None:
    """The DAVIS protocol's settings (docs/protocols.md#davis-label-propagation), shared by ``pe-dense track``
    and ``tools/eval_davis.py``; the defaults come from :class:`PropagationConfig` and :class:`VideoTracker`."""
    from .tracking.propagation import PropagationConfig
    from .tracking.tracker import PROTOCOL_SHORT_SIDE

    protocol = PropagationConfig()
    group = p.add_argument_group("label propagation (the DAVIS protocol's defaults)")
    group.add_argument("--layer", type=int, default=-1, help="block whose features are used (negative counts from "
                                                             "the end)")
    group.add_argument("--short-side", type=_positive_int, default=PROTOCOL_SHORT_SIDE,
                       help="frames are resized to this short side")
    group.add_argument("--context", type=_non_negative_int, default=protocol.context,
                       help="previous frames used besides the first")
    group.add_argument("--radius", type=_non_negative_int, default=protocol.radius,
                       help="neighbourhood radius in tokens (0: whole frame)")
    group.add_argument("--topk", type=_positive_int, default=protocol.topk, help="sources kept per target token")
    group.add_argument("--temperature", type=_positive_float, default=protocol.temperature,
                       help="softmax temperature of the cosine affinities")


def tracker_from_arguments(encoder, args: argparse.Namespace):
    """(VideoTracker, settings recorded in track.json) from :func:`add_propagation_arguments`'s options."""
    from .tracking import PropagationConfig, VideoTracker

    config = PropagationConfig(context=args.context, temperature=args.temperature, radius=args.radius,
                               topk=args.topk)
    tracker = VideoTracker.from_encoder(encoder, layer=args.layer, precision=args.precision, config=config,
                                        short_side=args.short_side)
    settings = {"model": args.model, "weights": str(args.weights) if args.weights else "random", "layer": args.layer,
                "precision": args.precision}
    return tracker, settings


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    from .models.inference import PRECISIONS

    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                   help="autocast precision of the encoder")


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders of images, or built-in samples (sample:astronaut, sample:chelsea, "
                        "sample:coffee)")
    p.add_argument("--size", help="input size N or HxW, multiples of the patch size (default: the model's)")
    p.add_argument("--batch-size", type=_positive_int, default=8)


def _add_model_arguments(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--model", required=True, help=f"model name, e.g. {example} (see `pe-dense models`)")
    p.add_argument("--weights", help="checkpoint file, 'hub' for the released weights, or hf://repo:file; "
                                     "random weights if omitted")
    add_precision_argument(p)
    p.add_argument("--device", type=device_argument, default="cpu")


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Add each option's default to its help (in every command), where it has a meaningful one (not None,
    False or empty) and the help does not already say it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _show_defaults(command)
        elif (action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS)
              and "default" not in (action.help or "")):
            action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"


def device_argument(spec: str) -> str:
    """``--device``: a device torch knows and this machine has."""
    import torch

    try:
        device = torch.device(spec)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"'{spec}' is not a device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"'{spec}': this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"'{spec}': no CUDA device is available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"'{spec}': MPS is not available on this machine")
    return spec


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="replace results of a previous run in --out")
    p.add_argument("--out", type=Path, required=True, help="output folder")


def _add_trained_model_arguments(p: argparse.ArgumentParser, config_kind: str, config_example: str,
                                 weights_help: str) -> None:
    """The arguments of the commands that run a model trained from a config on images (detect, segment,
    depth); each adds its own options."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders of images, or sample:NAME")
    p.add_argument("--config", type=Path, required=True, help=f"the {config_kind}, e.g. {config_example}")
    p.add_argument("--weights", required=True, help=weights_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--device", type=device_argument, default="cpu")
    _add_output_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pe-dense", description="Dense features from Perception Encoder models.")
    parser.add_argument("--version", action="version", version=f"pe-dense {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("features", help="save dense features and a PCA picture per image")
    _add_image_arguments(p)
    _add_model_arguments(p, "PE-Spatial-B16-512")
    p.add_argument("--layer", type=int, default=-1, help="block whose output to save (negative counts from the end)")
    _add_output_options(p)
    p.set_defaults(run=_features)

    p = commands.add_parser("viz", help="pictures of feature maps: PCA colours or token correspondence, per layer")
    _add_image_arguments(p)
    _add_model_arguments(p, "PE-Spatial-B16-512")
    p.add_argument("--layers", type=int, nargs="+", default=[-1], metavar="LAYER",
                   help="blocks to show (negative counts from the end); several give a side-by-side sweep")
    p.add_argument("--mode", choices=("pca", "lch", "corr"), default="pca",
                   help="pca: 3 components as RGB; lch: lightness + hue/chroma; corr: similarity to one token")
    p.add_argument("--fit", choices=("each", "first", "all"), default="each",
                   help="PCA fitted on each image, on the first (shared colours), or on all together")
    p.add_argument("--point", type=_numbers(2, "point"), metavar="X,Y",
                   help="--mode corr: query pixel in the first image (default: its centre)")
    p.add_argument("--panel-height", type=_positive_int, default=300, metavar="PIXELS",
                   help="height of each picture in the side-by-side sweep (several --layers)")
    _add_output_options(p)
    p.set_defaults(run=_viz)

    p = commands.add_parser("track", help="track objects through a video by label propagation (DAVIS protocol)")
    p.add_argument("video", type=Path, metavar="VIDEO", help="video file (mp4, webm, mkv...) or folder of frames")
    p.add_argument("--mask", type=Path, help="first-frame labels as a PNG: indexed (as DAVIS), binary (greyscale "
                                              "with two values), greyscale or 16-bit label ids, or flat RGB "
                                              "colours, one per object")
    p.add_argument("--box", type=_numbers(4, "box"), action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="object box in the first frame, segmented with SAM (repeat for more objects)")
    p.add_argument("--point", type=_numbers(2, "point"), action="append", default=[], metavar="X,Y",
                   help="a click on an object in the first frame, segmented with SAM (repeat for more)")
    p.add_argument("--sam-checkpoint", type=Path, help="Segment Anything checkpoint for --box/--point")
    p.add_argument("--sam-model", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    _add_model_arguments(p, "PE-Spatial-S16-512")
    add_propagation_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--out", type=Path, required=True, help="output folder (DAVIS layout: one PNG per frame)")
    p.set_defaults(run=_track)

    p = commands.add_parser("detect", help="run a trained detector (detectron2 LazyConfig) on images")
    _add_trained_model_arguments(p, "detector's LazyConfig", "configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py",
                                 "trained detector checkpoint (e.g. outputs/.../model_final.pth), or hf://repo:file")
    p.add_argument("--score-threshold", type=float, default=0.5, help="draw detections with at least this score")
    p.set_defaults(run=_detect)

    p = commands.add_parser("segment", help="run a trained segmenter (mmsegmentation config) on images")
    _add_trained_model_arguments(p, "segmenter's config", "configs/segmentation/scenes/upernet_PEspatial_T_scenes.py",
                                 "trained checkpoint (e.g. outputs/.../iter_1000.pth)")
    p.set_defaults(run=_segment)

    p = commands.add_parser("depth", help="run a trained depth estimator (mmsegmentation config) on images")
    _add_trained_model_arguments(p, "estimator's config", "configs/depth/scenes/dpt_PEspatial_T_scenes.py",
                                 "trained checkpoint (e.g. outputs/.../iter_600.pth)")
    p.add_argument("--ply", action="store_true", help="also write each image's point cloud (binary PLY)")
    p.add_argument("--focal", type=float, help="the point cloud camera's focal length in pixels (default: "
                                               "NYU-Depth-v2's, 518.86 px at 640 wide, scaled to the image width)")
    p.set_defaults(run=_depth)

    from .probe import TASKS

    p = commands.add_parser("probe", help="the PE paper's frozen-feature table: ADE20k linear segmentation, NYU "
                                          "depth, DAVIS label propagation, beside the published numbers")
    p.add_argument("--model", required=True, help="model name, e.g. PE-Spatial-B16-512 (its size picks the configs)")
    p.add_argument("--weights", help="encoder checkpoint (any layout pe_dense reads, e.g. tools/align_net.py's "
                                     "student_final.pt), 'hub' or hf://repo:file; --smoke without it: random weights")
    p.add_argument("--tasks", type=_names, default=list(TASKS), metavar="TASK,...",
                   help=f"some of {','.join(TASKS)} (default: all)")
    p.add_argument("--data", type=_key_paths, metavar="TASK=PATH,...",
                   help="the dataset folder of each task: ADE20k (ADEChallengeData2016), NYU-Depth-v2 in "
                        "mmsegmentation's layout, DAVIS 2017")
    layer = p.add_mutually_exclusive_group()
    layer.add_argument("--layer", type=int, help="the block every task reads (default: each protocol's: the last "
                                                 "block, four blocks for depth)")
    layer.add_argument("--layers", type=_integers, metavar="L,...",
                       help="a layer sweep: every task at each of these blocks, plus a plot of metric vs layer")
    p.add_argument("--smoke", action="store_true", help="a few iterations on the built-in data (no datasets needed)")
    p.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                   help="pytorch: distributed training under torchrun (mmengine's launcher)")
    p.add_argument("--out", type=Path, required=True, help="output folder; run the same command again to resume")
    p.set_defaults(run=_probe)

    p = commands.add_parser("convert", help="convert a checkpoint between official and timm layouts")
    p.add_argument("input", type=Path, help="official, timm, detectron2 or CLIP checkpoint (.pt/.pth/.safetensors)")
    p.add_argument("output", type=Path, help="output file; .safetensors writes safetensors, else torch")
    p.add_argument("--to", choices=("official", "timm"), default="official")
    p.add_argument("--prefix", help="key prefix of the vision tower, if the checkpoint holds several")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(run=_convert)

    from .export import FORMATS

    p = commands.add_parser("export", help="the encoder as ONNX or a torch.export ExportedProgram, checked against "
                                           "PyTorch")
    p.add_argument("model", metavar="MODEL", help="model name, e.g. PE-Spatial-S16-512 (see `pe-dense models`)")
    p.add_argument("--weights", help="checkpoint file, 'hub' for the released weights, or hf://repo:file; "
                                     "random weights if omitted")
    p.add_argument("--format", choices=FORMATS, required=True,
                   help="onnx, or exported-program (.pt2, torch.export.load)")
    p.add_argument("--size", required=True, help="input size N or HxW, multiples of the patch size (with --dynamic: "
                                                 "the size traced and checked)")
    p.add_argument("--layers", type=int, nargs="+", default=[-1], metavar="LAYER",
                   help="blocks whose dense maps are outputs (negative counts from the end)")
    p.add_argument("--pooled", action="store_true", help="also output the CLIP embedding (PE-Core models)")
    p.add_argument("--dynamic", action="store_true", help="any height and width that are multiples of the patch "
                                                          "size, not only --size (the batch size is always free)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--out", type=Path, required=True, help="output file, e.g. model.onnx; FILE.json beside it "
                                                           "describes it")
    p.set_defaults(run=_export, device="cpu")  # traced and checked on the CPU

    p = commands.add_parser("models", help="list the known PE vision models")
    p.set_defaults(run=_models)
    _show_defaults(parser)
    return parser


def check_precision_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 (argparse's usage error) for a ``--precision`` the ``--device`` cannot run fast."""
    from .models.inference import check_precision

    try:
        check_precision(args.device, args.precision)
    except ValueError as e:
        parser.error(f"--precision {args.precision}: {e}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "precision"):
        check_precision_argument(parser, args)
    from .models import CheckpointError

    try:
        return args.run(args)
    except (UsageError, ValueError, FileNotFoundError, CheckpointError, ImportError) as e:
        print(f"pe-dense {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        resume = {"track": " (run it again with --resume to continue)",
                  "probe": " (run the same command again to continue)"}.get(args.command, "")
        print(f"pe-dense {args.command}: interrupted{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
