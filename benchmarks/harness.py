"""Shared benchmark plumbing: interleaved timing of alternatives, memory peaks, environment capture, results
files.

Alternatives are timed in alternation (A B A B ...) so machine drift hits all of them alike, and the
median is reported. Results go to benchmarks/results/<name>.json with the device and versions. The
benchmarks run as scripts (``python benchmarks/NAME.py``), which puts this folder on the import path.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import platform
import resource
import statistics
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from pe_dense import cpu

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu.units().model


def environment(device: torch.device) -> dict:
    info = {
        "device": device_name(device),
        "device_type": device.type,
        "cpu_units": cpu.units().record(),  # what the CPU multiplies fast, and which paths that picks
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        pass
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int = 5,
                     warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated on a CUDA device while ``fn`` runs (CPU peaks are not tracked here)."""
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _cpu_peak_child(setup, args, queue):
    run = setup(*args)
    run()  # warm-up: code paths and thread pools
    baseline, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run()
    done.set()
    sampler.join()
    queue.put(max(0, peak[0] - baseline))


def cpu_peak_extra_bytes(setup: Callable[..., Callable[[], object]], *args) -> int:
    """Highest resident memory above the inputs while ``run()`` executes, where ``run = setup(*args)``
    makes its inputs (``setup`` must be a module-level function: it runs in a spawned process).

    The child's allocator returns freed blocks to the OS (glibc keeps freed memory mapped unless blocks
    are mmap-ed individually), so resident memory follows live memory; it is sampled every 0.2 ms
    (torch kernels release the GIL, so the sampler runs alongside).
    """
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_cpu_peak_child, args=(setup, args, queue))
        child.start()
        child.join()
    finally:
        del os.environ["MALLOC_MMAP_THRESHOLD_"]
    return queue.get()


def time_variants(setup: Callable[..., Callable[[], object]], variants: dict[str, tuple], device: torch.device,
                  repeats: int = 5, check: Optional[Callable[[dict], None]] = None) -> dict:
    """Time named variants of one step. ``setup(*variants[name])`` builds a variant's step (a module-level
    function: on the CPU it runs again in a spawned process, which measures the step's memory peak); ``check``
    sees the built steps before they are timed. Returns the median seconds per call (interleaved) and the peak
    memory in MiB (CUDA's allocator peak on a GPU; on the CPU the resident memory above the model and inputs)."""
    steps = {name: setup(*args) for name, args in variants.items()}
    if check is not None:
        check(steps)
    seconds = time_interleaved(steps, device, repeats=repeats)
    if device.type == "cuda":
        memory = {name: peak_memory(step, device) for name, step in steps.items()}
    else:
        memory = {name: cpu_peak_extra_bytes(setup, *args) for name, args in variants.items()}
    return {"seconds_per_iteration": {k: round(v, 3) for k, v in seconds.items()},
            "peak_memory_mib": {k: round(v / 2**20) for k, v in memory.items()}}


def ratios(values: dict[str, float], base: str) -> dict[str, float]:
    """Each value over ``values[base]``, the others only."""
    return {k: round(v / max(values[base], 1e-12), 2) for k, v in values.items() if k != base}


def report(name: str, results: dict) -> Path:
    """Print ``results`` (but their environment) and save them (:func:`save`)."""
    for key, value in results.items():
        if key != "environment":
            print(f"{key}: {value}")
    path = save(name, results)
    print("saved", path)
    return path


def step_arguments(description: str, choices: dict, default: str, option: str = "--recipe"):
    """The command line of a step benchmark: which recipe (or model), the device, the repeats."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(option, choices=sorted(choices), default=default)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    return parser


def save(name: str, payload: dict) -> Path:
    """Write ``payload`` to results/<name>.json; CPU results go to <name>_<kind>.json, one file per kind of
    CPU (avx2, avx512, amx: :attr:`pe_dense.cpu.CpuUnits.kind`), as their figures and paths differ."""
    if payload.get("environment", {}).get("device_type") == "cpu":
        name += f"_{cpu.units().kind}"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
