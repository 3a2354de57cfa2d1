"""The ``pe-dense`` command (also ``python -m pe_dense``): one module per command, each with its
``add_arguments(parser)`` and ``run(args)``; what they share is in :mod:`.common`."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Optional, Sequence

from .. import __version__
from ..arguments import ArgumentParser, check_precision_argument
from . import configs, convert, depth, detect, export, features, models, probe, segment, track, viz
from .common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError

COMMANDS = {"features": features, "viz": viz, "track": track, "detect": detect, "segment": segment, "depth": depth,
            "probe": probe, "convert": convert, "export": export, "models": models, "configs": configs}
DEBUG_VARIABLE = "PE_DENSE_DEBUG"  # set to 1: the traceback of an error, before its one-line message


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pe-dense", description="Dense features from Perception Encoder models.")
    parser.add_argument("--version", action="version", version=f"pe-dense {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        command = commands.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    _show_defaults(parser)
    return parser


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "precision"):
        check_precision_argument(parser, args)
    from ..models import CheckpointError

    try:
        return args.run(args)
    except (UsageError, ValueError, FileNotFoundError, CheckpointError, ImportError) as e:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            traceback.print_exc()
        print(f"pe-dense {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = getattr(COMMANDS[args.command], "RESUME_HINT", "")
        print(f"pe-dense {args.command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
