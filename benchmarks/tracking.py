"""Label propagation: pe_dense's screened propagation vs the classic dense formulation, and end-to-end fps.

1. One propagation step (first frame + 7 previous frames, radius 12, top-5) on the token grids of a
   480p frame (480x854): 30x53 for patch-16 models (S width 384), 34x61 for patch-14 (L width
   1024), and 60x106 (the patch-8 grid of the classic DINO evaluation). Same features for all; the
   labels must be identical (checked before timing). "pe_dense" is the step as a streamed run does
   it on the CPU (the context frames were quantised when they entered: the target is quantised, then
   screened and rescored); "tiled_exact" computes every neighbour's cosine in float32, tile by tile
   (pe_dense's previous implementation, still the path on other devices). Time per frame and peak
   extra memory (resident memory above the inputs, in a fresh process).
2. Memory flat in video length: peak resident memory of a streamed run over 50 and 500 frames.
3. End-to-end tracking fps (decode excluded: frames in memory) with PE-Spatial-T16 and -S16 at 480p, on
   the built-in moving-shapes video: fp32 with the float32 propagation (the previous pipeline), fp32 with
   the screened propagation, and where the CPU has native bf16, bf16 (`--precision bf16`) and, on CPUs
   without AMX where bf16 attention runs on pe_dense's kernel, bf16 with torch's attention; the ways take
   turns frame by frame; the J&F of each. On a GPU (``--device cuda``) only this part runs, fp32 against
   bf16 autocast (propagation runs the float32 tiles there).

    python benchmarks/tracking.py [--quick]   # tracking_cpu_<kind>.json: avx2, avx512 or amx (pe_dense.cpu)
    python benchmarks/tracking.py --device cuda --models PE-Spatial-S16-512 PE-Spatial-L14-448   # tracking_cuda.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from unittest import mock

import harness
import numpy as np
import torch
import torch.nn.functional as F

from pe_dense import cpu
from pe_dense.ops.dot_product_attention import bf16_kernel_preferred
from pe_dense.tracking import LabelPropagator, PropagationConfig
from pe_dense.tracking.dense_reference import neighbourhood_mask, propagate_labels_dense
from pe_dense.tracking.evaluate import ObjectScore, summarize
from pe_dense.tracking.metrics import Statistics, score_sequence
from pe_dense.tracking.propagation import (
    ScreenedMap,
    propagate_labels_exact,
    propagate_labels_screened,
    screening_available,
    screening_step,
)

CONTEXT, LABELS = 8, 4  # first frame + 7 previous; background + 3 objects
GRIDS = {"patch16 S (30x53, C=384)": (30, 53, 384), "patch14 L (34x61, C=1024)": (34, 61, 1024),
         "patch8 classic (60x106, C=384)": (60, 106, 384)}


def make_step(h, w, channels, seed=0):
    """Smooth, realistic-looking features (so top-k picks are spatially coherent) and soft labels."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.randn(1, channels, h // 4 + 1, w // 4 + 1, generator=g), size=(h, w),
                         mode="bilinear")[0]
    maps = [F.normalize(base + 0.3 * torch.randn(channels, h, w, generator=g), dim=0).permute(1, 2, 0)
            .contiguous() for _ in range(CONTEXT + 1)]
    labels = [torch.softmax(3 * torch.randn(h, w, LABELS, generator=g), -1) for _ in range(CONTEXT)]
    return maps[0], maps[1:], labels


def _ways(h, w, channels):
    """name -> the propagation step of ``make_step``'s frame, each way on the same features."""
    target, sources, labels = make_step(h, w, channels)
    step = screening_step(sources[0])  # a streamed run takes the first frame's step
    screened = [ScreenedMap.quantize(s, step, 12) for s in sources]  # quantised when they entered the context
    mask = neighbourhood_mask(h, w, 12)  # built once per video, as the classic scripts cache it

    def pe_dense():  # as propagate_labels dispatches: screened where the CPU has exact int8 products
        if screening_available(target):
            return propagate_labels_screened(ScreenedMap.quantize(target, step, 12), screened, labels)
        return propagate_labels_exact(target, sources, labels)

    return {
        "pe_dense": pe_dense,
        "tiled_exact": lambda: propagate_labels_exact(target, sources, labels),
        "dense": lambda: propagate_labels_dense(target, sources, labels, mask=mask),
    }


def _propagation_run(name, h, w, channels):
    return _ways(h, w, channels)[name]


def _stream_run(frames, h, w, channels):
    """A streamed run over ``frames`` frames: features made on the fly, soft labels discarded."""
    g = torch.Generator().manual_seed(0)
    first = torch.randn(channels, h, w, generator=g)
    labels = F.one_hot(torch.randint(0, LABELS, (h, w), generator=g), LABELS).permute(2, 0, 1).float()

    def run():
        propagator = LabelPropagator(first, labels, PropagationConfig())
        for _ in range(frames):
            propagator.step(torch.randn(channels, h, w, generator=g))
    return run


def propagation_rows(grids, repeats):
    rows = []
    for label, (h, w, channels) in grids.items():
        ways = _ways(h, w, channels)
        outputs = {name: run() for name, run in ways.items()}
        for name in ("pe_dense", "tiled_exact"):
            if not torch.equal(outputs[name].argmax(-1), outputs["dense"].argmax(-1)):
                raise SystemExit(f"{label}: labels differ between {name} and the dense formulation")
        times = harness.time_interleaved(ways, torch.device("cpu"), repeats=repeats)
        memory = {n: harness.cpu_peak_extra_bytes(_propagation_run, n, h, w, channels) for n in ways}
        row = {"grid": label, "ms_per_frame": {n: round(t * 1e3, 1) for n, t in times.items()},
               "speedup_vs_dense": {n: round(times["dense"] / times[n], 2) for n in ("pe_dense", "tiled_exact")},
               "peak_extra_MiB": {n: round(b / 2**20, 1) for n, b in memory.items()},
               "max_abs_diff_vs_dense": {n: float((outputs[n] - outputs["dense"]).abs().max())
                                         for n in ("pe_dense", "tiled_exact")},
               "labels_identical": True,
               "pe_dense_path": "int8 screening" if screening_available(torch.zeros(1)) else "float32 tiles"}
        print(row, flush=True)
        rows.append(row)
    return rows


def _j_and_f(truth, predictions) -> float:
    scores = [ObjectScore("video", obj, Statistics.of(j), Statistics.of(f))
              for obj, (j, f) in score_sequence(truth, predictions).items()]
    return round(summarize(scores)[0]["J&F-Mean"], 4)


def _way(screening: bool, attention_kernel: bool) -> contextlib.ExitStack:
    """Switch off the screened propagation (the previous pipeline: every cosine in float32, what other
    devices still run) or the bf16 attention kernel (torch's attention) for one frame's step."""
    stack = contextlib.ExitStack()
    if not screening:
        stack.enter_context(cpu.assuming(dataclasses.replace(cpu.units(), int8_dot=False)))
    if not attention_kernel:
        stack.enter_context(mock.patch("pe_dense.ops.dot_product_attention.bf16_kernel_preferred",
                                       return_value=False))
    return stack


def _ways_end_to_end(device: torch.device) -> dict:
    """name -> (precision, screening, attention kernel); the first is the one the others are compared with."""
    if device.type != "cpu":
        return {"fp32": ("fp32", True, True), "bf16": ("bf16", True, True)}
    ways = {"fp32, float32 propagation (before)": ("fp32", False, True), "fp32": ("fp32", True, True)}
    if cpu.native_bf16(cpu.units()):
        if bf16_kernel_preferred():  # with AMX, "bf16" already is torch's attention
            ways["bf16, torch attention"] = ("bf16", True, False)
        ways["bf16"] = ("bf16", True, True)
    return ways


def end_to_end_rows(models, frames, device: torch.device):
    """Frames/s of each way, frame by frame in turn (a slower spell of the machine hits every way), and
    the J&F of each. The first frame (features only, nothing to propagate) is not timed."""
    from PIL import Image

    from pe_dense.data.moving_shapes import render_moving_shapes
    from pe_dense.models import build_encoder
    from pe_dense.tracking import VideoTracker

    video, truth = render_moving_shapes(num_frames=frames, size=(480, 854))
    images = [(f"{i:05d}", Image.fromarray(f)) for i, f in enumerate(video)]
    ways = _ways_end_to_end(device)
    baseline = next(iter(ways))
    rows = []
    for model in models:
        torch.manual_seed(0)
        encoder = build_encoder(model).to(device)  # random weights: speed does not depend on them
        runs = {name: VideoTracker.from_encoder(encoder, precision=precision).track(images, truth[0])
                for name, (precision, _, _) in ways.items()}
        seconds = dict.fromkeys(ways, 0.0)
        predictions = {name: [] for name in ways}
        for index in range(len(images)):
            for name, steps in runs.items():
                with _way(*ways[name][1:]):
                    start = time.perf_counter()
                    frame = next(steps)
                    if index:
                        seconds[name] += time.perf_counter() - start
                predictions[name].append(frame.labels)
        fps = {name: (len(images) - 1) / t for name, t in seconds.items()}
        row = {"model": model, "frame": "480x854", "fps": {n: round(f, 2) for n, f in fps.items()},
               "J&F": {n: _j_and_f(truth, np.stack(p)) for n, p in predictions.items()},
               "speedup_vs_" + ("before" if device.type == "cpu" else baseline):
                   {n: round(f / fps[baseline], 2) for n, f in fps.items()}}
        print(row, flush=True)
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="patch-16 grid only, fewer frames")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    parser.add_argument("--models", nargs="+", default=["PE-Spatial-T16-512", "PE-Spatial-S16-512"],
                        help="the end-to-end part's models")
    args = parser.parse_args()
    torch.manual_seed(0)
    frames = 6 if args.quick else 24
    if args.device.type != "cpu":
        results = {"environment": harness.environment(args.device),
                   "end_to_end": end_to_end_rows(args.models, frames, args.device)}
        if not args.quick:
            print("wrote", harness.save(f"tracking_{args.device.type}", results))
        return
    grids = dict(list(GRIDS.items())[:1]) if args.quick else GRIDS
    results = {"environment": harness.environment(torch.device("cpu")),
               "settings": {"context_frames": CONTEXT, "radius": 12, "topk": 5, "labels": LABELS},
               "propagation": propagation_rows(grids, repeats=3 if args.quick else 5)}
    h, w, channels = GRIDS["patch16 S (30x53, C=384)"]
    lengths = (10, 50) if args.quick else (50, 500)
    results["video_length_peak_extra_MiB"] = {
        str(n): round(harness.cpu_peak_extra_bytes(_stream_run, n, h, w, channels) / 2**20, 1) for n in lengths}
    print(results["video_length_peak_extra_MiB"], flush=True)
    results["end_to_end"] = end_to_end_rows(args.models, frames, args.device)
    if not args.quick:
        print("wrote", harness.save("tracking_cpu", results))


if __name__ == "__main__":
    main()
