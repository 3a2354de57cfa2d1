"""Attention on the CPU: pe_dense's bf16 kernel vs torch's scaled_dot_product_attention in bf16 and fp32.

Shapes are the encoders' own (batch 1, every head of one block) at the inputs people run on a CPU:
tracking at 480p (T16, S16: 30x53 tokens), the native sizes of B16/L14/G14, and one ViTDet window.
The operands are laid out as the encoder makes them (views into the packed q/k/v projection). Before
timing, each bf16 way's error against float64 attention is measured (relative Frobenius norm).

    python benchmarks/attention.py [--repeats 10]
"""

from __future__ import annotations

import argparse

import harness
import torch
import torch.nn.functional as F

from pe_dense.ops.dot_product_attention import bf16_kernel_supported

SHAPES = {  # name -> (batch, heads, tokens, head dim)
    "T16 tracking 480x848": (1, 3, 1590, 64),
    "S16 tracking 480x848": (1, 6, 1590, 64),
    "B16 at 224": (1, 12, 196, 64),
    "L14 at 448": (1, 16, 1024, 64),
    "G14 at 448": (1, 16, 1024, 96),
    "L14 ViTDet windows (64 of 14x14)": (64, 16, 196, 64),
}


def _operands(b, h, n, d, dtype):
    qkv = torch.randn(b, n, 3, h, d, generator=torch.Generator().manual_seed(0)).to(dtype)
    return qkv.permute(2, 0, 3, 1, 4)  # q, k, v: (b, h, n, d) views, as SelfAttention makes them


def run(repeats: int) -> list[dict]:
    rows = []
    for name, (b, h, n, d) in SHAPES.items():
        q, k, v = _operands(b, h, n, d, torch.bfloat16)
        q32, k32, v32 = _operands(b, h, n, d, torch.float32)
        exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
        ways = {"pe_dense_bf16": lambda: torch.ops.pe_dense.attention_bf16(q, k, v, d ** -0.5),
                "torch_bf16": lambda: F.scaled_dot_product_attention(q, k, v),
                "torch_fp32": lambda: F.scaled_dot_product_attention(q32, k32, v32)}
        errors = {w: round(float((ways[w]().double() - exact).norm() / exact.norm()), 5)
                  for w in ("pe_dense_bf16", "torch_bf16")}
        seconds = harness.time_interleaved(ways, torch.device("cpu"), repeats=repeats)
        row = {"shape": name, "batch_heads_tokens_dim": [b, h, n, d],
               "ms": {w: round(t * 1e3, 2) for w, t in seconds.items()},
               "pe_dense_speedup": {w: round(t / seconds["pe_dense_bf16"], 2) for w, t in seconds.items()
                                    if w != "pe_dense_bf16"},
               "relative_error_vs_float64": errors}
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not bf16_kernel_supported():
        raise SystemExit("the bf16 attention kernel needs pe_dense._C and a CPU with AVX512-BF16")
    results = {"benchmark": "attention", "environment": harness.environment(torch.device("cpu")),
               "results": run(args.repeats)}
    print("saved", harness.save("attention_cpu", results))


if __name__ == "__main__":
    main()
