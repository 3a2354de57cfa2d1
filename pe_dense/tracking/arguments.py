"""The DAVIS protocol's settings as command-line options, shared by ``pe-dense track`` and tools/eval_davis.py
(docs/protocols.md#davis-label-propagation); the defaults come from :class:`PropagationConfig` and
:class:`VideoTracker`."""

from __future__ import annotations

import argparse

from ..arguments import non_negative_int, positive_float, positive_int
from .propagation import PropagationConfig
from .tracker import PROTOCOL_SHORT_SIDE, VideoTracker


def add_propagation_arguments(parser: argparse.ArgumentParser) -> None:
    protocol = PropagationConfig()
    group = parser.add_argument_group("label propagation (the DAVIS protocol's defaults)")
    group.add_argument("--layer", type=int, default=-1, help="block whose features are used (negative counts from "
                                                             "the end)")
    group.add_argument("--short-side", type=positive_int, default=PROTOCOL_SHORT_SIDE,
                       help="frames are resized to this short side")
    group.add_argument("--context", type=non_negative_int, default=protocol.context,
                       help="previous frames used besides the first")
    group.add_argument("--radius", type=non_negative_int, default=protocol.radius,
                       help="neighbourhood radius in tokens (0: whole frame)")
    group.add_argument("--topk", type=positive_int, default=protocol.topk, help="sources kept per target token")
    group.add_argument("--temperature", type=positive_float, default=protocol.temperature,
                       help="softmax temperature of the cosine affinities")


def tracker_from_arguments(encoder, args: argparse.Namespace) -> tuple[VideoTracker, dict]:
    """(VideoTracker, settings recorded in track.json) from :func:`add_propagation_arguments`'s options."""
    config = PropagationConfig(context=args.context, temperature=args.temperature, radius=args.radius,
                               topk=args.topk)
    tracker = VideoTracker.from_encoder(encoder, layer=args.layer, precision=args.precision, config=config,
                                        short_side=args.short_side)
    settings = {"model": args.model, "weights": str(args.weights) if args.weights else "random", "layer": args.layer,
                "precision": args.precision}
    return tracker, settings
