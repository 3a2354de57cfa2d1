"""Label propagation: pe_dense's tiled propagation vs the classic dense formulation, and end-to-end fps.

1. One propagation step (first frame + 7 previous frames, radius 12, top-5) on the token grids of a
   480p frame (480x854): 30x53 for patch-16 models (S width 384), 34x61 for patch-14 (L width
   1024), and 60x106 (the patch-8 grid of the classic DINO evaluation). Same features for both; the
   labels must be identical (checked before timing). Time per frame and peak extra memory (resident
   memory above the inputs, in a fresh process).
2. Memory flat in video length: peak resident memory of a streamed run over 50 and 500 frames.
3. End-to-end tracking fps (decode excluded: frames in memory) with PE-Spatial-T16 and -S16 at 480p.

    python benchmarks/tracking.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from pe_dense.tracking import LabelPropagator, PropagationConfig, propagate_labels  # noqa: E402
from pe_dense.tracking.dense_reference import neighbourhood_mask, propagate_labels_dense  # noqa: E402

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


def _propagation_run(name, h, w, channels):
    target, sources, labels = make_step(h, w, channels)
    if name == "pe_dense":
        return lambda: propagate_labels(target, sources, labels)
    mask = neighbourhood_mask(h, w, 12)  # built once per video, as the classic scripts cache it
    return lambda: propagate_labels_dense(target, sources, labels, mask=mask)


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
        target, sources, labels = make_step(h, w, channels)
        ours = propagate_labels(target, sources, labels)
        dense = propagate_labels_dense(target, sources, labels)
        if not torch.equal(ours.argmax(-1), dense.argmax(-1)):
            raise SystemExit(f"{label}: labels differ between pe_dense and the dense formulation")
        mask = neighbourhood_mask(h, w, 12)
        times = harness.time_interleaved({
            "pe_dense": lambda: propagate_labels(target, sources, labels),
            "dense": lambda: propagate_labels_dense(target, sources, labels, mask=mask),
        }, torch.device("cpu"), repeats=repeats)
        memory = {n: harness.cpu_peak_extra_bytes(_propagation_run, n, h, w, channels) for n in ("pe_dense", "dense")}
        row = {"grid": label, "ms_per_frame": {n: round(t * 1e3, 1) for n, t in times.items()},
               "speedup": round(times["dense"] / times["pe_dense"], 2),
               "peak_extra_MiB": {n: round(b / 2**20, 1) for n, b in memory.items()},
               "memory_ratio": round(memory["dense"] / max(memory["pe_dense"], 1), 1),
               "max_abs_diff": float((ours - dense).abs().max()), "labels_identical": True}
        print(row, flush=True)
        rows.append(row)
    return rows


def end_to_end_rows(models, frames):
    from PIL import Image

    from pe_dense.data.moving_shapes import render_moving_shapes
    from pe_dense.models import build_encoder
    from pe_dense.tracking import VideoTracker

    video, labels = render_moving_shapes(num_frames=frames, size=(480, 854))
    images = [(f"{i:05d}", Image.fromarray(f)) for i, f in enumerate(video)]
    rows = []
    for model in models:
        encoder = build_encoder(model)  # speed does not depend on the weights
        tracker = VideoTracker.from_encoder(encoder)
        start = time.perf_counter()
        steps = tracker.track(images, labels[0])
        next(steps)
        first = time.perf_counter()
        for _ in steps:
            pass
        fps = (frames - 1) / (time.perf_counter() - first)
        row = {"model": model, "frame": "480x854", "grid": list(tracker.input_size(854, 480)),
               "fps": round(fps, 2), "first_frame_s": round(first - start, 2)}
        print(row, flush=True)
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="patch-16 grid only, fewer frames")
    args = parser.parse_args()
    torch.manual_seed(0)
    grids = dict(list(GRIDS.items())[:1]) if args.quick else GRIDS
    results = {"environment": harness.environment(torch.device("cpu")),
               "settings": {"context_frames": CONTEXT, "radius": 12, "topk": 5, "labels": LABELS},
               "propagation": propagation_rows(grids, repeats=3 if args.quick else 5)}
    h, w, channels = GRIDS["patch16 S (30x53, C=384)"]
    lengths = (10, 50) if args.quick else (50, 500)
    results["video_length_peak_extra_MiB"] = {
        str(n): round(harness.cpu_peak_extra_bytes(_stream_run, n, h, w, channels) / 2**20, 1) for n in lengths}
    print(results["video_length_peak_extra_MiB"], flush=True)
    results["end_to_end"] = end_to_end_rows(["PE-Spatial-T16-512", "PE-Spatial-S16-512"], 6 if args.quick else 20)
    if not args.quick:
        print("wrote", harness.save("tracking_cpu", results))


if __name__ == "__main__":
    main()
