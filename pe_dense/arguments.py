"""Argument types and options that the ``pe-dense`` command and the scripts in tools/ share: their values are
checked when the command line is read, so a bad one is a usage error (exit status 2) before any work."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Callable


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser for :class:`CommaList` options: a list that starts with a negative number
    (``--layers -1,5``) is read as a value, as ``-1`` is, and the help shows a list as ``--layers LAYER,...``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$|^-\d*\.\d+$")

    def _get_formatter(self):
        return type("ListFormatter", (_ListFormatter, self.formatter_class), {})(prog=self.prog)


class _ListFormatter(argparse.HelpFormatter):
    def _format_args(self, action, default_metavar):
        if isinstance(action, CommaList):  # one value as the help shows it; spaces are only read for old scripts
            return self._metavar_formatter(action, default_metavar)(1)[0]
        return super()._format_args(action, default_metavar)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got '{text}'")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


class CommaList(argparse.Action):
    """A list option written with commas, as every list of pe_dense's command lines is: ``--layers 3,7,-1``.
    Values separated by spaces, as some options took them before (``--layers 3 7 -1``), are still read, with
    a note to write commas. ``item`` reads each element (default: the text itself)."""

    def __init__(self, option_strings, dest, item: Callable[[str], object] = str, **kwargs):
        super().__init__(option_strings, dest, nargs="+", **kwargs)
        self.item = item

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 1:
            print(f"{parser.prog}: note: {option_string} {' '.join(values)} is deprecated and will stop working in "
                  f"the next release; write {option_string} {','.join(values)}", file=sys.stderr)
        try:
            items = [self.item(text.strip()) for value in values for text in value.split(",") if text.strip()]
        except argparse.ArgumentTypeError as e:
            parser.error(f"argument {option_string}: {e}")
        except ValueError:
            items = None
        if not items:
            parser.error(f"argument {option_string}: expected {self.metavar or 'comma-separated values'}, got "
                         f"'{' '.join(values)}'")
        setattr(namespace, self.dest, items)


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


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    from .models.inference import PRECISIONS

    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                        help="autocast precision of the encoder")


def check_precision_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 (argparse's usage error) for a ``--precision`` the ``--device`` cannot run fast."""
    from .models.inference import check_precision

    try:
        check_precision(args.device, args.precision)
    except ValueError as e:
        parser.error(f"--precision {args.precision}: {e}")
