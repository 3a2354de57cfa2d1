"""Exported encoder throughput: onnxruntime (CPU) vs PyTorch eager (CPU), same weights, same process, same
inputs, same number of threads. Each model is exported with pe_dense.export (last layer, native size, fixed
size), the two are checked to agree, then timed in alternation; images/s and the ratio go to
benchmarks/results/export_cpu_<kind>.json (pe_dense.cpu).

    python benchmarks/export.py                                           # PE-Spatial-T16-512, batch 1 and 4
    python benchmarks/export.py --models PE-Spatial-T16-512 PE-Spatial-S16-512 --threads 1

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

from pe_dense.export import export_encoder
from pe_dense.models import build_encoder, get_config


def onnx_session(path: Path) -> onnxruntime.InferenceSession:
    """onnxruntime on the CPU with as many threads as torch uses, so the comparison is like for like; its
    threads do not spin-wait after a run, which would take the cores from the PyTorch run timed next."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(args) -> dict:
    device = torch.device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        size = get_config(name).image_size
        encoder = build_encoder(name)
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
                seconds = harness.time_interleaved({"onnxruntime": ort, "pytorch": pytorch}, device,
                                                   repeats=args.repeats)
                row = {
                    "model": name, "batch": batch, "size": size, "dtype": "fp32",
                    "onnxruntime_images_per_s": batch / seconds["onnxruntime"],
                    "pytorch_images_per_s": batch / seconds["pytorch"],
                    "onnxruntime_vs_pytorch": seconds["pytorch"] / seconds["onnxruntime"], "max_abs_diff": gap,
                }
                results.append(row)
                print(f"{name:<20} batch {batch:>3}: onnxruntime {row['onnxruntime_images_per_s']:7.2f} img/s, "
                      f"pytorch {row['pytorch_images_per_s']:7.2f} img/s, ratio {row['onnxruntime_vs_pytorch']:.3f}",
                      flush=True)
    environment = {**harness.environment(device), "onnxruntime": onnxruntime.__version__,
                   "load_average_1min": os.getloadavg()[0]}
    return {"benchmark": "export", "environment": environment, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["PE-Spatial-T16-512"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="threads of both runtimes (default: torch's)")
    parser.add_argument("--output", default="export_cpu", help="results name")
    args = parser.parse_args()
    path = harness.save(args.output, run(args))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
