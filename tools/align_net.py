#!/usr/bin/env python
"""Spatial alignment: train a PE student against a frozen PE feature teacher and SAM's mask-logit
correspondences (docs/alignment.md), then save it as an official PE ``.pt``.

    python tools/align_net.py --config configs/align/tiny.py            # CPU demo, a few minutes
    python tools/align_net.py --config configs/align/PEcore_G_to_spatial.py data.root=/data/sa1b
    torchrun --nproc_per_node 8 tools/align_net.py --config ... [--resume] [section.key=value ...]

Several machines: torchrun --nnodes N --node_rank R --rdzv_endpoint HOST:PORT ... (torch DDP).
``--resume`` continues from the newest checkpoint in ``train.output_dir``.
"""

import argparse
import logging
import sys

from pe_dense.align.config import AlignConfigError, load_config
from pe_dense.align.trainer import AlignTrainer
from pe_dense.models.checkpoint import CheckpointError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a Python file under configs/align/ defining `config`")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in train.output_dir")
    parser.add_argument("overrides", nargs="*", help="section.key=value (Python literals, else strings)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        trainer = AlignTrainer(load_config(args.config, args.overrides), resume=args.resume)
    except (AlignConfigError, FileExistsError, FileNotFoundError, CheckpointError) as e:
        print(f"align_net: error: {e}", file=sys.stderr)
        return 2
    exported = trainer.train()
    if exported is not None:
        print(f"aligned student: {exported}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
