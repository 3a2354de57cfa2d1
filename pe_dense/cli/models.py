"""``pe-dense models``: the known PE vision models, a line each."""

from __future__ import annotations

import argparse

HELP = "list the known PE vision models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from ..models import MODEL_CONFIGS

    print(f"{'name':<26}{'family':<9}{'patch':>6}{'width':>7}{'depth':>7}{'image':>7}  head")
    for name, c in MODEL_CONFIGS.items():
        head = f"attn pool -> {c.output_dim}" if c.pool else "-"
        print(f"{name:<26}{c.family:<9}{c.patch_size:>6}{c.width:>7}{c.depth:>7}{c.image_size:>7}  {head}")
    return 0
