"""``pe-dense features``: dense features of images, folders, lists and videos into a feature store
(docs/features.md#features-of-a-collection); under torchrun the shards are shared out over the processes."""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

from ..arguments import CommaList, non_negative_int, positive_float, positive_int
from .common import UsageError, build_encoder, check_out_folder, warn_if_huge, weights_name
from .options import add_model_arguments, add_stride_argument, check_stride

HELP = "dense features of images, folders, lists and videos into a feature store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image or video files, folders (searched recursively), .txt files listing paths (one a "
                             "line, relative to the list), or built-in samples (sample:astronaut, sample:chelsea, "
                             "sample:coffee)")
    add_model_arguments(parser, "PE-Spatial-B16-512")
    parser.add_argument("--layers", action=CommaList, item=int, default=[-1], metavar="LAYER,...",
                        help="blocks whose outputs to store, from one pass (negative counts from the end)")
    add_stride_argument(parser)
    parser.add_argument("--pooled", action="store_true",
                        help="also store the CLIP embedding (PE-Core models: attention pooling and projection)")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--size", help="squash every image to N or HxW, multiples of the patch size (default: the "
                                      "model's size, square)")
    sizes.add_argument("--short-side", type=positive_int,
                       help="keep the aspect: short side about this, both sides rounded to the patch size")
    sizes.add_argument("--max-tokens", type=positive_int,
                       help="keep the aspect: the largest size with at most this many patches")
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--every", type=positive_int, default=1, help="of a video file, every N-th frame")
    frames.add_argument("--fps", type=positive_float, help="of a video file, about this many frames per second")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="storage dtype of the features (the compute precision is --precision)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="DataLoader processes decoding and resizing inputs (0: in the main process)")
    parser.add_argument("--shard-size", type=positive_int, default=128, help="items per shard")
    parser.add_argument("--pictures", action="store_true",
                        help="also write a PCA picture of the first layer per item (pictures/ITEM.png)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first input that cannot be read, instead of recording it and going on")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue a run that stopped: keep its finished shards")
    again.add_argument("--force", action="store_true", help="replace a store already in --out")
    parser.add_argument("--out", type=Path, required=True, help="the store's folder")


def run(args: argparse.Namespace) -> int:
    from .. import distributed

    rank, world = distributed.start()
    try:  # a rank that stops on an error leaves the group, so the others are not left waiting at a barrier
        return _extract(args, rank, world)
    finally:
        distributed.stop(world)


def _extract(args: argparse.Namespace, rank: int, world: int) -> int:
    import torch

    from .. import distributed
    from ..feature_extraction import Frames, Resize, finish, list_items, run_shards
    from ..feature_extraction.job import PICTURES, output_names
    from ..feature_store import MANIFEST, SHARDS, VIDEOS
    from ..models import encoder_config, encoder_weights_file
    from ..models.preprocess import parse_size

    config = encoder_config(args.model)
    check_stride(args)
    if args.pooled and args.stride:
        raise UsageError("--pooled and --stride: the CLIP embedding is of the plain pass; store it in a run "
                         "without --stride")
    items, listing_failures = list_items(args.inputs, Frames(args.every, args.fps))
    if args.strict and listing_failures:
        raise ValueError(f"{listing_failures[0]['item']}: {listing_failures[0]['reason']}")
    resize = Resize(config.patch_size, short_side=args.short_side, max_tokens=args.max_tokens,
                    size=None if args.short_side or args.max_tokens else parse_size(args.size, config.image_size),
                    pixels=config.pixels)
    check_out_folder(args.out)
    held = [args.out / name for name in (MANIFEST, SHARDS, PICTURES, VIDEOS) if (args.out / name).exists()]
    if held and not (args.resume or args.force):
        raise UsageError(f"{args.out} already holds a feature store; pass --resume to continue it or --force to "
                         "replace it")
    if resize.size is not None:
        warn_if_huge(config, resize.size, args.batch_size)
    if args.weights is None:
        torch.manual_seed(0)  # random weights, but the same in every process and in a resumed run
    if args.device.startswith("cuda") and world > 1:
        args.device = f"cuda:{distributed.local_rank()}"
    encoder = build_encoder(args)
    for layer in args.layers:
        encoder.layer_index(layer)  # fail before any work
    if args.pooled and getattr(encoder, "attn_pool", None) is None:
        raise UsageError(f"--pooled: {args.model} has no pooling head (only PE-Core models do)")
    if resize.size is not None:
        encoder.token_grid(*resize.size)
    digest = _sha256(encoder_weights_file(args.model, args.weights)) if args.weights and rank == 0 else None
    header = {"model": args.model, "weights": weights_name(args),
              "weights_sha256": distributed.from_rank_0(digest, world),  # the file is read once, not per rank
              "layers": args.layers, "outputs": output_names(args.layers, args.pooled),
              "preprocessing": resize.describe(),
              "frames": Frames(args.every, args.fps).describe(), "dtype": args.dtype, "precision": args.precision,
              "stride": args.stride or config.patch_size, "shard_size": args.shard_size}

    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        for path in held if args.force else ():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        if args.resume:  # what a killed run was writing (shards, pictures, the manifest) is discarded
            for partial in args.out.rglob(".*.partial*"):
                partial.unlink()
    distributed.barrier(world)
    run_shards(encoder, items, args.out, header, resize=resize, layers=args.layers, batch_size=args.batch_size,
               shard_size=args.shard_size, workers=args.workers, pooled=args.pooled, stride=args.stride,
               pictures=args.pictures, strict=args.strict, rank=rank, world=world, progress=rank == 0)
    distributed.barrier(world)
    failures = None
    if rank == 0:
        manifest = finish(args.out, header, items, args.shard_size, listing_failures)
        failures = manifest["failures"]
        print(f"wrote features of {len(manifest['items'])} item(s) in {len(manifest['shards'])} shard(s) to "
              f"{args.out}" + (f"; {len(failures)} input(s) could not be read (failures in {MANIFEST})"
                               if failures else ""))
    failures = distributed.from_rank_0(failures, world)
    return 1 if failures else 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
