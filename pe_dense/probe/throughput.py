"""An encoder's speed and memory at the protocol's resolution, on the machine that runs the probe: images per
second and peak memory of a forward pass through every block, on a batch of ADE20k crops (512 px padded up
to a multiple of the patch), in float32."""

from __future__ import annotations

import resource
import statistics
import threading
import time
from pathlib import Path

import torch

from .. import cpu
from ..models import build_encoder
from .tasks import Config, sliding_window

BATCH, REPEATS = 8, 3
SMOKE_BATCH, SMOKE_REPEATS = 1, 1  # --smoke shows the mechanics, in seconds


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class _PeakResident:
    """The highest resident memory of the process while the block runs, sampled every millisecond (torch's
    kernels release the GIL, so the sampler runs alongside)."""

    def __enter__(self):
        self.peak, self._done = _resident_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.is_set():
            self.peak = max(self.peak, _resident_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def measure(config: Config, weights: Path, smoke: bool) -> tuple[dict, int]:
    """(images/s (median of the timed batches) and peak memory, the encoder's parameters). Peak memory: on a
    GPU the most allocated, on the CPU the resident memory above the process's before the encoder was built
    (its weights and activations)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, repeats = (SMOKE_BATCH, SMOKE_REPEATS) if smoke else (BATCH, REPEATS)
    side = sliding_window(config.patch_size)[0]
    before = _resident_bytes()
    with _PeakResident() as resident:
        encoder = build_encoder(config.name, weights, device=device)
        images = torch.randn(batch, 3, side, side, device=device)
        with torch.inference_mode():
            encoder.dense_features(images)  # warm-up: code paths, thread pools, the allocator
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            seconds = []
            for _ in range(repeats):
                began = time.perf_counter()
                encoder.dense_features(images)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds.append(time.perf_counter() - began)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resident.peak - before
    speed = {"resolution": [side, side], "batch": batch, "images_per_s": round(batch / statistics.median(seconds), 2),
            "peak_memory_mib": round(peak / 2**20), "precision": "fp32",
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu.units().model,
            "threads": torch.get_num_threads()}
    return speed, sum(p.numel() for p in encoder.parameters())
