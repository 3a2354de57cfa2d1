"""``pe-dense configs``: the configs that ship with pe_dense (``--config pe_dense:NAME``)."""

from __future__ import annotations

import argparse

HELP = "list the shipped configs (take one with --config pe_dense:NAME)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prefix", nargs="?", default="", metavar="PREFIX",
                        help="only names that start with this, e.g. segmentation/ or DETA/")
    parser.add_argument("--path", action="store_true", help="print each config's file too")


def run(args: argparse.Namespace) -> int:
    from .. import configs

    names = configs.names(args.prefix)
    if not names:
        print(f"no shipped config starts with '{args.prefix}'")
        return 0
    for name in names:
        print(f"{configs.PREFIX}{name}" + (f"  {configs.get(name)}" if args.path else ""))
    return 0
