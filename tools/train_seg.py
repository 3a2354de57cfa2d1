#!/usr/bin/env python
"""Train or test an mmsegmentation config with a PE backbone (mmengine's Runner): segmentation or depth.

    python tools/train_seg.py --config configs/segmentation/ade20k/linear_PEspatial_B_ade20k.py \
        --cfg-options train_dataloader.dataset.data_root=/data/ADEChallengeData2016
    python tools/train_seg.py --config configs/depth/nyu/dpt_PEspatial_L_nyu.py \
        --cfg-options train_dataloader.dataset.data_root=/data/nyu val_dataloader.dataset.data_root=/data/nyu
    python tools/train_seg.py --config configs/segmentation/scenes/upernet_PEspatial_T_scenes.py \
        --data /data/my_dataset          # your own folders, declared by /data/my_dataset/dataset.json
    python tools/train_seg.py --config ... --resume                 # continue from the work dir's last checkpoint
    python tools/train_seg.py --config ... --test outputs/.../iter_40000.pth   # mIoU (or d1, rmse, ...)
    torchrun --nproc_per_node 8 tools/train_seg.py --config ... --launcher pytorch
    torchrun --nnodes 4 --node_rank R --master_addr HOST --master_port PORT --nproc_per_node 8 \
        tools/train_seg.py --config ... --launcher pytorch          # several machines

With --data, the dataset is checked and summarised before anything else (docs/custom_data.md), and the
config's heads, ignore index, depth range and evaluator are set from its declaration. Checkpoints are
read without unpickling code (pe_dense.integrations.mmseg.checkpoint). The last evaluation is written
to ``<work_dir>/evaluation.json``.
"""

import argparse
import os
import sys

from mmengine.config import DictAction
from mmengine.runner import Runner

from pe_dense.atomic_files import write_json
from pe_dense.data.custom import DatasetError
from pe_dense.integrations.mmseg import SegmentationDataError
from pe_dense.integrations.mmseg.custom_data import use_dataset
from pe_dense.integrations.mmseg.training import check_datasets, load_config
from pe_dense.models import CheckpointError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True,
                        help="mmseg config file (configs/segmentation/..., configs/depth/...)")
    parser.add_argument("--data", metavar="PATH",
                        help="your own dataset: a dataset.json, or the folder holding it (docs/custom_data.md)")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default: outputs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                        help="config overrides, e.g. model.backbone.weights=/path/PE-Spatial-B16-512.pt")
    parser.add_argument("--resume", action="store_true", help="continue from the work dir's last checkpoint")
    parser.add_argument("--amp", action="store_true", help="mixed precision training (CUDA)")
    parser.add_argument("--test", metavar="CHECKPOINT", help="only evaluate this checkpoint on the test split")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


SUMMARY = {"mIoU": 2, "aAcc": 2, "mAcc": 2, "d1": 3, "abs_rel": 3, "rmse": 3}  # metric: decimals, when present


def write_evaluation(work_dir: str, metrics: dict) -> None:
    metrics = {k: float(v) for k, v in metrics.items()}  # numpy scalars from the metric and the message hub
    os.makedirs(work_dir, exist_ok=True)
    write_json(os.path.join(work_dir, "evaluation.json"), metrics)
    summary = ", ".join(f"{k} {metrics[k]:.{precision}f}" for k, precision in SUMMARY.items() if k in metrics)
    print(f"evaluation: {summary} (written to {work_dir}/evaluation.json)")


def run(args) -> None:
    cfg = load_config(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options, amp=args.amp,
                      resume=args.resume, launcher=args.launcher, checkpoint=args.test)
    loaders = ["test_dataloader"] if args.test else ["train_dataloader", "val_dataloader"]
    if args.data:
        summary = use_dataset(cfg, args.data, loaders)  # every process checks: each needs the file lists
        if os.environ.get("RANK", "0") == "0":
            summary.print()
    check_datasets(cfg, loaders)
    runner = Runner.from_cfg(cfg)
    if args.test:
        metrics = runner.test()
    else:
        runner.train()
        scalars = runner.message_hub.log_scalars
        metrics = {k[len("val/"):]: v.current() for k, v in scalars.items() if k.startswith("val/")}
    if metrics and runner.rank == 0:
        write_evaluation(cfg.work_dir, metrics)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, CheckpointError, SegmentationDataError, DatasetError) as e:
        # A data error raised in a dataloader worker arrives with the worker's traceback: keep its message.
        message = str(e).strip().splitlines()[-1]
        print(f"train_seg: error: {message.split(f'{type(e).__name__}: ', 1)[-1]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
