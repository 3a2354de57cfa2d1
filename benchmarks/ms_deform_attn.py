"""Multi-scale deformable attention, forward + backward, at DETA-like shapes: pe_dense's kernel vs the
pure-PyTorch reference vs the PyPI package torch-ms-deform-attn (an independent implementation),
same process, same inputs. Ratios and peak memory are saved under benchmarks/results/.

Shapes: batch 2, 4 levels of a 1024x1024 input at strides 8-64 (128^2 ... 16^2), 8 heads,
32 channels, 4 points; 900 queries (decoder) and one query per position (encoder, 21760).

    python benchmarks/ms_deform_attn.py                 # CPU
    python benchmarks/ms_deform_attn.py --queries 900 --skip-memory --no-save   # a quick look, nothing saved
    python benchmarks/ms_deform_attn.py --device cuda   # adds fp16/bf16 and memory bandwidth
"""

from __future__ import annotations

import argparse

import harness
import torch

from pe_dense.ops import kernels_available, ms_deform_attn, ms_deform_attn_reference

LEVELS = [(128, 128), (64, 64), (32, 32), (16, 16)]
BATCH, HEADS, CHANNELS, POINTS = 2, 8, 32, 4
# Achievable DRAM bandwidth of known cards (bytes/s), for the bandwidth fraction on GPU.
PEAK_BANDWIDTH = {"H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H200": 4.8e12, "A100": 2.0e12}


def reference_points(queries: int, g: torch.Generator) -> torch.Tensor:
    """(queries, 2) reference points as DETA uses them: the encoder has one query per position, at the
    position's own centre; decoder queries sit anywhere."""
    if queries == sum(h * w for h, w in LEVELS):
        centres = [torch.stack(torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w,
                                              indexing="ij")[::-1], -1).reshape(-1, 2) for h, w in LEVELS]
        return torch.cat(centres)
    return torch.rand(queries, 2, generator=g)


def make_inputs(queries: int, device, dtype, pattern: str = "deta", seed: int = 0):
    """Inputs at the benchmark shapes. "deta": each point lies a few pixels (std 2) from its query's
    reference point on every level, as deformable attention samples; "uniform": anywhere, the
    cache-hostile worst case."""
    g = torch.Generator().manual_seed(seed)
    length = sum(h * w for h, w in LEVELS)
    value = torch.randn(BATCH, length, HEADS, CHANNELS, generator=g)
    shape = (BATCH, queries, HEADS, len(LEVELS), POINTS, 2)
    if pattern == "uniform":
        locations = torch.rand(shape, generator=g)
    else:
        pixels = torch.tensor(LEVELS).flip(-1).float()  # (L, 2) as (W, H)
        offsets = torch.randn(shape, generator=g) * 2.0 / pixels[:, None, :]
        locations = reference_points(queries, g)[None, :, None, None, None, :] + offsets
    weights = torch.rand(BATCH, queries, HEADS, len(LEVELS), POINTS, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    shapes = torch.tensor(LEVELS)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    tensors = [t.to(device, dtype).requires_grad_() for t in (value, locations, weights)]
    return tensors[0], shapes.to(device), starts.to(device), tensors[1], tensors[2]


def implementations(device):
    impls = {"pe_dense": lambda v, s, i, loc, w: ms_deform_attn(v, s, i, loc, w, use_kernel=True),
             "reference": lambda v, s, i, loc, w: ms_deform_attn_reference(v, s, loc, w)}
    try:
        import torch_ms_deform_attn

        impls["torch_ms_deform_attn"] = lambda v, s, i, loc, w: torch_ms_deform_attn.ms_deform_attn(v, s, i, loc, w)
    except ImportError:
        print("torch-ms-deform-attn is not installed: pip install --no-build-isolation torch-ms-deform-attn==0.1.1")
    return impls


def step(fn, inputs, grad):
    out = fn(*inputs)
    value, _, _, locations, weights = inputs
    return torch.autograd.grad(out, (value, locations, weights), grad)


def _cpu_step(name, queries, pattern):
    inputs = make_inputs(queries, "cpu", torch.float32, pattern)
    grad = torch.randn(BATCH, queries, HEADS * CHANNELS)
    fn = implementations("cpu")[name]
    return lambda: step(fn, inputs, grad)


def peak_extra_bytes(name, queries, pattern, device) -> int:
    """Memory one forward+backward needs beyond its inputs."""
    if device.type == "cuda":
        inputs = make_inputs(queries, device, torch.float32, pattern)
        grad = torch.randn(BATCH, queries, HEADS * CHANNELS, device=device)
        held = sum(t.numel() * t.element_size() for t in (*inputs, grad))
        return harness.peak_memory(lambda: step(implementations(device)[name], inputs, grad), device) - held
    return harness.cpu_peak_extra_bytes(_cpu_step, name, queries, pattern)


def check_agreement(impls, inputs, grad, dtype):
    """Relative L2 error of every implementation's output and gradients against the reference run in
    float64, checked before anything is timed. (float32 grid_sample itself is off by ~1e-3 in its
    location gradients on 128x128 maps, hence the float64 truth; a relative L2 norm, because among
    millions of points a few land within rounding of a pixel edge, where location gradients jump.)"""
    value, shapes, starts, locations, weights = inputs
    exact = [t.detach().double().requires_grad_() for t in (value, locations, weights)]
    exact_inputs = (exact[0], shapes, starts, exact[1], exact[2])
    truth = step(impls["reference"], exact_inputs, grad.double()) + (impls["reference"](*exact_inputs),)
    errors = {}
    for name, fn in impls.items():
        result = step(fn, inputs, grad) + (fn(*inputs),)
        errors[name] = max((torch.linalg.vector_norm(a.double() - b) / torch.linalg.vector_norm(b)).item()
                           for a, b in zip(result, truth))
    tolerance = 5e-3 if dtype == torch.float32 else 3e-2
    if errors["pe_dense"] > tolerance:  # the others are recorded as they are (fp16 grid_sample is far off)
        raise SystemExit(f"pe_dense is off by {errors['pe_dense']:.2e} (relative L2 vs float64); not timing it")
    return errors


def unique_bytes(inputs, grad) -> int:
    """Lower bound of DRAM traffic of forward+backward: every tensor read or written once."""
    value, _, _, locations, weights = inputs
    once = sum(t.numel() * t.element_size() for t in (value, locations, weights, grad))
    return 2 * once + grad.numel() * grad.element_size()  # inputs read twice, gradients written, output written


def sampled_bytes(inputs) -> int:
    """Bytes the sampling itself moves: per point, four corner rows read in the forward, read again and
    accumulated into (read + write) in the backward. Neighbouring points share rows, so much of this
    is served by the L2 cache rather than DRAM."""
    value, _, _, locations, _ = inputs
    points = locations.numel() // 2 // value.shape[2]  # per head
    row = value.shape[3] * value.element_size()
    return points * value.shape[2] * 4 * row * 4


def measure(impls, queries: int, pattern: str, dtype, device, args) -> dict:
    """One row: times of every implementation on the same inputs, after checking they agree."""
    inputs = make_inputs(queries, device, dtype, pattern)
    grad = torch.randn(BATCH, queries, HEADS * CHANNELS, device=device, dtype=dtype)
    if dtype != torch.float32:  # torch-ms-deform-attn computes low precision in float32: not a like-for-like
        impls = {k: v for k, v in impls.items() if k != "torch_ms_deform_attn"}
    errors = check_agreement(impls, inputs, grad, dtype)
    seconds = harness.time_interleaved({n: (lambda f=f: step(f, inputs, grad)) for n, f in impls.items()},
                                       device, repeats=args.repeats)
    row = {"queries": queries, "pattern": pattern, "dtype": str(dtype).split(".")[1], "seconds": seconds,
           "relative_l2_error_vs_float64": errors, "speedup_vs_reference": seconds["reference"] / seconds["pe_dense"]}
    if "torch_ms_deform_attn" in seconds:
        row["speedup_vs_torch_ms_deform_attn"] = seconds["torch_ms_deform_attn"] / seconds["pe_dense"]
    if device.type == "cuda":
        peak = next((bw for key, bw in PEAK_BANDWIDTH.items() if key in harness.device_name(device)), None)
        row["unique_bytes_GBps"] = unique_bytes(inputs, grad) / seconds["pe_dense"] / 1e9
        row["sampled_bytes_GBps"] = sampled_bytes(inputs) / seconds["pe_dense"] / 1e9
        if peak:
            row["peak_dram_GBps"] = peak / 1e9
            row["unique_bytes_fraction_of_peak"] = row["unique_bytes_GBps"] * 1e9 / peak
            row["sampled_bytes_fraction_of_peak"] = row["sampled_bytes_GBps"] * 1e9 / peak
    if dtype == torch.float32 and not args.skip_memory:
        row["peak_extra_MiB"] = {n: round(peak_extra_bytes(n, queries, pattern, device) / 2**20, 1) for n in impls}
    return row


def describe(row: dict) -> str:
    text = (f"queries {row['queries']:>6} {row['pattern']:>7} {row['dtype']:>8}: "
            + ", ".join(f"{n} {s * 1e3:8.1f} ms" for n, s in row["seconds"].items())
            + f" | vs reference x{row['speedup_vs_reference']:.1f}")
    if "speedup_vs_torch_ms_deform_attn" in row:
        text += f", vs torch-ms-deform-attn x{row['speedup_vs_torch_ms_deform_attn']:.2f}"
    if "sampled_bytes_GBps" in row:
        text += (f" | unique {row['unique_bytes_GBps']:.0f} GB/s, sampled {row['sampled_bytes_GBps']:.0f} GB/s"
                 + (f" ({row['sampled_bytes_fraction_of_peak']:.0%} of DRAM peak)" if "peak_dram_GBps" in row else ""))
    if "peak_extra_MiB" in row:
        text += f" | peak extra MiB {row['peak_extra_MiB']}"
    return text


def run(args) -> dict:
    device = torch.device(args.device)
    if not kernels_available(device):
        raise SystemExit(f"pe_dense._C has no {device.type} kernel: build it first")
    impls = implementations(device)
    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if device.type == "cuda" else [])
    rows = []
    for queries in args.queries:
        for pattern in args.patterns:
            for dtype in dtypes if pattern == "deta" else dtypes[:1]:
                rows.append(measure(impls, queries, pattern, dtype, device, args))
                print(describe(rows[-1]), flush=True)
    return {"benchmark": "ms_deform_attn_forward_backward", "environment": harness.environment(device),
            "shapes": {"batch": BATCH, "levels": LEVELS, "heads": HEADS, "channels": CHANNELS, "points": POINTS},
            "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", nargs="+", type=int, default=[900, sum(h * w for h, w in LEVELS)])
    parser.add_argument("--patterns", nargs="+", choices=("deta", "uniform"), default=["deta", "uniform"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument("--no-save", action="store_true", help="print the rows only, keeping the recorded results")
    args = parser.parse_args()
    payload = run(args)
    if not args.no_save:
        print(f"saved {harness.save(f'ms_deform_attn_{torch.device(args.device).type}', payload)}")


if __name__ == "__main__":
    main()
