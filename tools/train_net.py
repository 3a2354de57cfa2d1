#!/usr/bin/env python
"""Train or evaluate a detectron2 LazyConfig detector with a PE backbone.

    python tools/train_net.py --config-file configs/detection/COCO/mask_rcnn_PEspatial_G_coco36ep.py \
        --num-gpus 8 [key=value ...]
    python tools/train_net.py --config-file ... --eval-only train.init_checkpoint=PATH
    python tools/train_net.py --config-file ... --resume        # continue from output_dir's last checkpoint
    python tools/train_net.py --config-file ... --eval-only --tta   # with the config's test-time augmentation
    python tools/train_net.py --config-file pe_dense:detection/shapes/mask_rcnn_PEspatial_T_shapes.py  # shipped
    python tools/train_net.py --config-file configs/detection/custom/mask_rcnn_PEspatial_B_custom.py \
        custom_data.train_json=train.json custom_data.train_images=images/ \
        custom_data.val_json=val.json custom_data.val_images=images/      # your own COCO-format files

Several machines: the same command on each with --num-machines N --machine-rank R
--dist-url tcp://HOST:PORT (detectron2's launch, torch DDP). Checkpoints are read with
PEDetectionCheckpointer: released PE encoders (``pe://MODEL``) and PE detectron2 checkpoints load
as they are, and nothing is unpickled. Evaluation results are also written to
``<output_dir>/evaluation.json``. Your own COCO files (``custom_data``, docs/custom_data.md) are checked
and summarised before anything is written; the run's ``<output_dir>/config.yaml`` keeps their class names
for ``pe-dense detect``.
"""

import logging
import os
import sys

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from pe_dense import configs
from pe_dense.atomic_files import write_json
from pe_dense.data.custom import DatasetError
from pe_dense.integrations.detectron2 import PEDetectionCheckpointer
from pe_dense.integrations.detectron2.custom_data import use_coco_files

logger = logging.getLogger("detectron2")


def do_test(cfg, model, tta: bool = False) -> dict:
    if "evaluator" not in cfg.dataloader:
        return {}
    if tta:  # the config's wrapper, e.g. pe_deta's DETAWithTTA, around the trained model
        cfg.tta.model = model
        model = instantiate(cfg.tta)
    loader = instantiate(cfg.dataloader.test)  # first: it generates a built-in dataset the evaluator reads
    results = inference_on_dataset(model, loader, instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
        summary = ", ".join(f"{task} AP {metrics['AP']:.1f}" for task, metrics in results.items() if "AP" in metrics)
        logger.info("Evaluation of %s: %s", cfg.dataloader.test.dataset.names, summary)
        os.makedirs(cfg.train.output_dir, exist_ok=True)
        write_json(os.path.join(cfg.train.output_dir, "evaluation.json"), results)
    return results


def do_train(args, cfg) -> None:
    model = instantiate(cfg.model).to(cfg.train.device)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = PEDetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # A checkpoint stores the iteration that had just finished, so training goes on with the next one.
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def fit_to_machine(cfg) -> None:
    """Run a CUDA config on the CPU where there is no GPU (without AMP, which needs CUDA)."""
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("no CUDA device: running on the CPU")
        cfg.train.device = "cpu"
    if cfg.train.device == "cpu" and cfg.train.amp.enabled:
        logger.warning("AMP needs CUDA: training in float32")
        cfg.train.amp.enabled = False
        cfg.train.ddp.fp16_compression = False


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument("--tta", action="store_true",
                        help="evaluate with the config's test-time augmentation (its `tta`); with --eval-only")
    return parser


def main(args) -> None:
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(configs.resolve(args.config_file))), args.opts)
    if args.tta and not args.eval_only:
        sys.exit("error: --tta is an evaluation option: add --eval-only")
    if args.tta and "_target_" not in cfg.get("tta", {}):
        sys.exit(f"error: --tta: {args.config_file} defines no test-time augmentation (`tta`)")
    try:
        summary = use_coco_files(cfg, training=not args.eval_only)
    except DatasetError as e:
        print(f"train_net: error: {e}", file=sys.stderr)
        sys.exit(2)
    if summary and comm.is_main_process():
        summary.print()
    default_setup(cfg, args)
    fit_to_machine(cfg)
    if args.eval_only:
        model = create_ddp_model(instantiate(cfg.model).to(cfg.train.device))
        PEDetectionCheckpointer(model, cfg.train.output_dir).resume_or_load(cfg.train.init_checkpoint,
                                                                            resume=args.resume)
        do_test(cfg, model, tta=args.tta)
    else:
        do_train(args, cfg)


def invoke_main() -> None:
    args = argument_parser().parse_args()
    if not os.path.isfile(args.config_file):
        sys.exit(f"error: config file '{args.config_file}' does not exist")
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    invoke_main()
