"""``pe-dense export``: the encoder, or a whole trained segmenter or depth estimator (an mmseg config and its
weights), as ONNX or a torch.export ExportedProgram in fp32, fp16 or bf16, or a whole detectron2 detector as
TorchScript; checked against PyTorch before it is written."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import CommaList
from ..atomic_files import write_json
from .common import UsageError, build_encoder, check_out_file, config_overrides, weights_name

HELP = "the encoder, or a whole segmenter, depth estimator or detector, as a deployable file checked against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export import DTYPES, FORMATS

    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="model name of an encoder export, e.g. PE-Spatial-S16-512 (see `pe-dense models`)")
    parser.add_argument("--config", type=Path,
                        help="export a whole trained model instead: its mmseg config (segmenter or depth estimator), "
                             "a file or pe_dense:NAME; --weights is then its trained checkpoint")
    parser.add_argument("--weights", help="checkpoint file, 'hub' for the released weights, or hf://repo:file; "
                                          "random weights if omitted (encoder only)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of --config (repeatable)")
    parser.add_argument("--format", choices=(*FORMATS, "torchscript"), default="onnx",
                        help="onnx (default), exported-program (.pt2, torch.export.load), or torchscript (detectron2 "
                             "detectors: --config with a LazyConfig)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                        help="precision of the exported graph's weights and arithmetic (inputs and float outputs "
                             "stay float32)")
    parser.add_argument("--size", required=True,
                        help="input size N or HxW: for an encoder multiples of the patch size, for a whole model any "
                             "(with --dynamic: the size traced and checked)")
    parser.add_argument("--layers", action=CommaList, item=int, default=None, metavar="LAYER,...",
                        help="encoder only: blocks whose dense maps are outputs (negative counts from the end; "
                             "default -1)")
    parser.add_argument("--pooled", action="store_true", help="encoder only: also output the CLIP embedding "
                                                              "(PE-Core models)")
    parser.add_argument("--dynamic", action="store_true", help="any height and width that are multiples of the "
                                                               "patch size (whole models: of the config's size "
                                                               "divisor), not only --size (the batch size is "
                                                               "always free)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--out", type=Path, required=True, help="output file, e.g. model.onnx; FILE.json beside it "
                                                                "describes it")
    parser.set_defaults(device="cpu")  # traced and checked on the CPU


def run(args: argparse.Namespace) -> int:
    from ..models.preprocess import parse_size

    if (args.model is None) == (args.config is None):
        raise UsageError("name a MODEL (the encoder) or --config with --weights (a whole model), not both")
    manifest_path = args.out.with_name(f"{args.out.name}.json")
    for path in (args.out, manifest_path):
        check_out_file(path, args.force, "e.g. model.onnx or model.pt2")
    if args.format == "torchscript":
        return _export_detector(args, manifest_path)
    if args.config is not None:
        return _export_whole(args, manifest_path)
    if args.set:
        raise UsageError("--set applies to --config")
    from ..export import check_request, export_encoder
    from ..models import get_config

    config = get_config(args.model)
    size = parse_size(args.size, config.image_size)
    layers = args.layers or [-1]
    check_request(config, args.format, size, layers, args.pooled, args.dtype)
    manifest = export_encoder(build_encoder(args), args.out, format=args.format, size=size, layers=layers,
                              pooled=args.pooled, dynamic=args.dynamic, dtype=args.dtype)
    write_json(manifest_path, {"model": args.model, "weights": weights_name(args), **manifest})
    check = manifest["check"]
    print(f"wrote {args.out} and {manifest_path.name} ({args.dtype}); run in {check['runtime']}, it agrees with "
          f"PyTorch to {check['max_abs_diff']:.1e}")
    return 0


def _check_whole(args: argparse.Namespace) -> tuple[int, int]:
    """The options of a whole-model export (--config) that need no model; returns --size."""
    from ..models.preprocess import parse_size

    if args.config is None:
        raise UsageError("--format torchscript exports detectors: name their LazyConfig with --config")
    if args.layers is not None or args.pooled:
        raise UsageError("--layers and --pooled apply to encoder exports, not to --config")
    if args.weights is None:
        raise UsageError("--config needs --weights: the model's trained checkpoint")
    return parse_size(args.size, 0)


def _export_detector(args: argparse.Namespace, manifest_path: Path) -> int:
    size = _check_whole(args)
    if args.dtype != "fp32" or args.dynamic:
        raise UsageError("detectors export in fp32 at one size (--size): not with --dtype or --dynamic")
    config_overrides(args.set)  # each KEY=VALUE; detectron2 reads them as they are written
    try:
        from ..integrations.detectron2.deploy import export_detector
    except ImportError as e:
        raise UsageError(f"exporting a detector needs detectron2 (docs/install.md#detectron2): {e}") from None
    from ..export import check_images

    photos = [image.permute(1, 2, 0).byte().numpy() for image in check_images(size, batch=2)]
    manifest = export_detector(str(args.config), args.weights, args.out, size=size, photos=photos,
                               overrides=args.set)
    write_json(manifest_path, {"config": str(args.config), "weights": args.weights, "overrides": args.set,
                               **manifest})
    check = manifest["check"]
    print(f"wrote {args.out} and {manifest_path.name} (detection, fp32); run by {check['runtime']} against PyTorch: "
          f"detections {check['detections']} as PyTorch's, least IoU {check['min_iou']:.6f}, largest score "
          f"difference {check['max_score_diff']:.2g}")
    return 0


def _export_whole(args: argparse.Namespace, manifest_path: Path) -> int:
    from ..export import export_whole_model, require

    size = _check_whole(args)
    overrides = config_overrides(args.set)
    require(args.format, args.dtype)
    try:
        from ..integrations.mmseg.deploy import load_whole_model
    except ImportError as e:
        raise UsageError(f"exporting a whole model needs mmsegmentation, mmengine and mmcv (docs/install.md): "
                         f"{e}") from None
    model, facts = load_whole_model(str(args.config), args.weights, overrides)
    manifest = export_whole_model(model, args.out, format=args.format, size=size, dynamic=args.dynamic,
                                  dtype=args.dtype, name=str(args.config))
    write_json(manifest_path, {"config": str(args.config), "weights": args.weights, "overrides": overrides,
                               **facts, **manifest})
    check = manifest["check"]
    measured = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in check.items() if isinstance(v, float))
    print(f"wrote {args.out} and {manifest_path.name} ({model.task}, {args.dtype}); run in {check['runtime']} "
          f"against PyTorch (fp32): {measured}")
    return 0
