"""Exported model throughput: onnxruntime (CPU) vs PyTorch eager (CPU, fp32), same weights, same process, same
inputs, same number of threads. Encoders are exported with pe_dense.export (last layer, native size, fixed
size); whole models (--configs: mmseg segmenters and depth estimators, random weights, as `pe-dense export
--config` builds them) at --whole-size in each of --dtypes that onnxruntime runs on this CPU. Each file is
checked against PyTorch, then the two are timed in alternation; images/s, the ratio and the agreement go to
benchmarks/results/<output>_<kind>.json (--output, default export_cpu; <kind> from pe_dense.cpu).

    python benchmarks/export.py                                           # PE-Spatial-T16-512, batch 1 and 4
    python benchmarks/export.py --models PE-Spatial-T16-512 PE-Spatial-S16-512 --threads 1
    python benchmarks/export.py --models --configs configs/segmentation/scenes/linear_PEspatial_T_scenes.py \
        configs/depth/scenes/linear_PEspatial_T_scenes.py --dtypes fp32 fp16 --threads 1 --output export_whole

On a machine shared with other jobs, use --threads 1: torch's OpenMP threads wait for each other at every
operation, so a descheduled thread stalls them all and the PyTorch figure measures the contention.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import harness
import onnxruntime
import torch

from pe_dense.export import check_images, export_encoder, export_whole_model, require
from pe_dense.models import build_encoder, get_config
from pe_dense.models.preprocess import parse_size


def onnx_session(path: Path) -> onnxruntime.InferenceSession:
    """onnxruntime on the CPU with as many threads as torch uses, so the comparison is like for like; its
    threads do not spin-wait after a run, which would take the cores from the PyTorch run timed next."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _timed(row: dict, ort, pytorch, batch: int, device, repeats: int) -> dict:
    """``row`` with both runtimes' images/s and their ratio, timed in alternation; printed."""
    seconds = harness.time_interleaved({"onnxruntime": ort, "pytorch": pytorch}, device, repeats=repeats)
    row = {**row, "onnxruntime_images_per_s": batch / seconds["onnxruntime"],
           "pytorch_images_per_s": batch / seconds["pytorch"],
           "onnxruntime_vs_pytorch": seconds["pytorch"] / seconds["onnxruntime"]}
    print(f"{row.get('model') or Path(row['config']).stem:<28} {row['dtype']} batch {batch:>3}: onnxruntime "
          f"{row['onnxruntime_images_per_s']:7.2f} img/s, pytorch {row['pytorch_images_per_s']:7.2f} img/s, ratio "
          f"{row['onnxruntime_vs_pytorch']:.3f}", flush=True)
    return row


def encoder_rows(name: str, args, device) -> list[dict]:
    size = get_config(name).image_size
    encoder = build_encoder(name)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.onnx"
        export_encoder(encoder, path, format="onnx", size=(size, size))
        session = onnx_session(path)
        for batch in args.batch_sizes:
            images = torch.randn(batch, 3, size, size)
            feed = {"images": images.numpy()}

            def pytorch():
                with torch.inference_mode():
                    return encoder.dense_features(images)

            def ort():
                return session.run(None, feed)[0]

            gap = (torch.from_numpy(ort()) - pytorch()).abs().max().item()
            if gap > 1e-4:
                raise SystemExit(f"{name}: outputs differ by {gap}; the comparison would be meaningless")
            rows.append(_timed({"model": name, "batch": batch, "size": size, "dtype": "fp32", "max_abs_diff": gap},
                               ort, pytorch, batch, device, args.repeats))
    return rows


def whole_model(config: str, folder: Path):
    """The config's whole model with random weights (the speed does not depend on them), loaded from a checkpoint
    as `pe-dense export --config` loads one."""
    import warnings

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from pe_dense.integrations.mmseg.deploy import load_whole_model

    init_default_scope("mmseg")
    with warnings.catch_warnings():  # random weights, as intended here
        warnings.simplefilter("ignore")
        state = MODELS.build(Config.fromfile(config).model).state_dict()
    torch.save({"state_dict": state}, folder / "weights.pth")
    return load_whole_model(config, str(folder / "weights.pth"))[0]


def whole_rows(config: str, args, device) -> list[dict]:
    size = parse_size(args.whole_size, 0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model = whole_model(config, Path(folder))
        for dtype in args.dtypes:
            try:
                require("onnx", dtype)
            except ValueError as e:
                print(f"{Path(config).stem}: {dtype} skipped ({e})")
                continue
            path = Path(folder) / f"{dtype}.onnx"
            check = export_whole_model(model, path, format="onnx", size=size, dtype=dtype)["check"]
            agreement = {k: v for k, v in check.items() if k.startswith(("class_agreement", "depth_max"))}
            session = onnx_session(path)
            for batch in args.batch_sizes:
                images = check_images(size, batch)
                feed = {"images": images.numpy()}

                def pytorch():
                    with torch.inference_mode():
                        return model(images)

                def ort():
                    return session.run(None, feed)

                rows.append(_timed({"config": config, "task": model.task, "batch": batch, "size": list(size),
                                    "dtype": dtype, "pytorch_dtype": "fp32", **agreement},
                                   ort, pytorch, batch, device, args.repeats))
    return rows


def run(args) -> dict:
    device = torch.device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [row for name in args.models for row in encoder_rows(name, args, device)]
    results += [row for config in args.configs for row in whole_rows(config, args, device)]
    environment = {**harness.environment(device), "onnxruntime": onnxruntime.__version__,
                   "load_average_1min": os.getloadavg()[0]}
    return {"benchmark": "export", "environment": environment, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["PE-Spatial-T16-512"],
                        help="encoders (none: whole models only)")
    parser.add_argument("--configs", nargs="*", default=[], help="whole models: mmseg configs")
    parser.add_argument("--whole-size", default="120x160", help="whole models' input size HxW")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "fp16"], help="whole models' precisions")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="threads of both runtimes (default: torch's)")
    parser.add_argument("--output", default="export_cpu", help="results name")
    args = parser.parse_args()
    path = harness.save(args.output, run(args))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
