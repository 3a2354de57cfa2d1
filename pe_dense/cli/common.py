"""What the commands share: usage errors, the loaded encoder, output-folder rules, manifests, config overrides
(the argument groups are in :mod:`.options`)."""

from __future__ import annotations

import argparse
import ast
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from ..atomic_files import write_json

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


class UsageError(Exception):
    """A problem with the command line or its inputs, reported without a traceback."""


def shout(message: str) -> None:
    bar = "!" * min(100, len(message) + 4)
    print(f"{bar}\n! {message}\n{bar}", file=sys.stderr)


def weights_name(args: argparse.Namespace) -> str:
    """``--weights`` as manifests record it."""
    return str(args.weights) if args.weights else "random"


def build_encoder(args: argparse.Namespace):
    """The encoder of ``--model``, ``--weights`` and ``--device``, announcing random weights loudly."""
    from ..models import RandomWeightsWarning
    from ..models import build_encoder as build

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        encoder = build(args.model, args.weights, device=args.device)
    for w in caught:
        if issubclass(w.category, RandomWeightsWarning):
            shout(f"WARNING: {args.model} has RANDOM weights (no --weights given): outputs are meaningless")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return encoder


def encoder_on_images(args: argparse.Namespace, manifest_name: str):
    """What a command that runs the encoder on images (viz) needs: (encoder, images, input size),
    once the images, the size and ``--out`` are checked and the model is built."""
    from ..data.image_sources import find_images
    from ..models import encoder_config
    from ..models.preprocess import parse_size

    config = encoder_config(args.model)
    sources = find_images(args.images)
    size = parse_size(args.size, config.image_size)
    check_out(args.out, sources, [manifest_name], args.force)
    warn_if_huge(config, size, args.batch_size)
    encoder = build_encoder(args)
    encoder.token_grid(*size)  # fail before any work
    return encoder, sources, size


def warn_if_huge(config, size: tuple[int, int], batch_size: int) -> None:
    """A loud note when the input has far more tokens than the model was trained at: attention grows
    with the square of the token count, so such a run can take very long with no output."""
    tokens = (size[0] // config.patch_size) * (size[1] // config.patch_size)
    native = config.pretrain_grid**2
    if tokens > 16 * native:
        activations = batch_size * tokens * config.mlp_width * 8 / 2**30  # the MLP's hidden layer, float32, x2
        shout(f"NOTE: {size[0]}x{size[1]} is {tokens} tokens, {tokens / native:.0f}x the {native} {config.name} was "
              f"trained at: about {(tokens / native) ** 2:.0f}x the attention work of the native size per image, "
              f"and {activations:.1f} GiB of activations per batch of {batch_size}; this may take very long")


# ---------------------------------------------------------------- output folders and files
def check_out_folder(out: Path) -> None:
    """``--out`` is a writable folder, or one that can be made."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    existing_parent = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing_parent, os.W_OK):
        raise UsageError(f"cannot write to {existing_parent}: permission denied")


def check_out(out: Path, sources, fixed: Sequence[str], force: bool) -> None:
    """The rule of every command that writes per-image results: ``--out`` is a writable folder (or can be
    made), and results already in it, the command's own files (``fixed``) or files named after this
    run's images, are replaced only with ``--force``. Checked before anything is built or written."""
    check_out_folder(out)
    if force or not out.is_dir():
        return
    names = [source.name for source in sources]
    clash = sorted(p.name for p in out.iterdir() if p.name in fixed or any(
        p.name.startswith((f"{name}.", f"{name}_")) for name in names))
    if clash:
        shown = ", ".join(clash[:6]) + (f", ... ({len(clash) - 6} more)" if len(clash) > 6 else "")
        raise UsageError(f"{out} already holds results this run would replace ({shown}); pass --force to replace "
                         "them")


def check_out_file(path: Path, force: bool, kinds: str) -> None:
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


def write_manifest(path: Path, args: argparse.Namespace, overrides, results: dict) -> None:
    """The manifest of a command that runs a trained model from a config (detect, segment, depth)."""
    write_json(path, {"config": str(args.config), "weights": args.weights, "overrides": overrides, **results})


def config_overrides(pairs: Sequence[str]) -> dict:
    """``--set KEY=VALUE`` pairs, values read as Python literals where they are (numbers, tuples, None)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set takes KEY=VALUE, got '{pair}'")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def mmseg_predictor(args: argparse.Namespace, kind: str, manifest_name: str):
    """(the predictor ``kind`` of pe_dense.integrations.mmseg.predict for ``--config`` and ``--weights``, the
    images, the config overrides), once the output folder and the images are checked."""
    from ..data.image_sources import find_images

    try:
        from ..integrations.mmseg import predict
    except ImportError as e:
        raise UsageError(f"{args.command} needs mmsegmentation, mmengine and mmcv (docs/install.md): {e}") from None
    overrides = config_overrides(args.set)
    sources = find_images(args.images)
    check_out(args.out, sources, [manifest_name], args.force)
    return getattr(predict, kind)(str(args.config), args.weights, overrides, device=args.device), sources, overrides
