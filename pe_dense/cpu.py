"""What this CPU computes fast, and the dispatch rules that follow from it, in one place.

Three choices depend on the CPU's units (docs/benchmarks.md#cpu-kinds shows each kind's figures):

- ``--precision bf16`` on the CPU needs native bf16 (AVX512-BF16 or AMX); elsewhere oneDNN emulates bf16,
  which is slower than fp32.
- pe_dense's bf16 attention kernel runs with AVX512-BF16 and stands aside with AMX, where torch's attention
  multiplies on the AMX tiles and is about 3x faster than the kernel.
- Label propagation screens neighbours with int8 products only where int8 dot products are native
  (AVX512-VNNI, AVX-VNNI, AMX-INT8) and ``torch._int_mm`` uses them, which shows as exact sums: without
  them oneDNN sums pairs of products in saturating 16-bit lanes, inexact and slow (a screened step took
  8x the float32 tiles' time on an AVX2-only EPYC), so propagation keeps the float32 tiles there.

:func:`units` reads the units once; each rule takes them, so that the rules can be tested for any CPU, and
:func:`assuming` makes the dispatch behave as on other units (benchmarks time a path the CPU would not
choose that way). The units are read as torch's kernels see them: ``ATEN_CPU_CAPABILITY=avx2`` (with
``ONEDNN_MAX_CPU_ISA=AVX2`` for oneDNN) makes an AVX-512 CPU dispatch as an AVX2-only one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
from pathlib import Path

import torch

# Environment variables that cap the instructions torch, oneDNN and MKL use; benchmarks record them.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@dataclasses.dataclass(frozen=True)
class CpuUnits:
    model: str
    vector_isa: str  # the vector instructions torch's kernels run: "avx512", "avx2", or another ("default", ...)
    bf16: bool  # native bf16 products: AVX512-BF16 (with AVX-512 kernels) or AMX
    amx: bool  # AMX tiles (bf16 and int8)
    int8_dot: bool  # native int8 dot products: AVX512-VNNI (with AVX-512 kernels), AVX-VNNI or AMX-INT8
    int8_exact: bool  # torch._int_mm sums int8 products exactly here (it runs on those units)

    @property
    def kind(self) -> str:
        """The kind benchmark results are kept apart by: "amx", "avx512", "avx2", else the vector ISA."""
        return "amx" if self.amx else self.vector_isa

    def record(self) -> dict:
        """The units, the kind and the instruction caps set in the environment, for result files."""
        caps = {name: os.environ[name] for name in ISA_CAPS if name in os.environ}
        return {**dataclasses.asdict(self), "kind": self.kind, **({"isa_caps": caps} if caps else {})}


def native_bf16(cpu: CpuUnits) -> bool:
    """Whether bf16 on this CPU is faster than fp32 (``--precision bf16`` is refused otherwise)."""
    return cpu.bf16


def bf16_attention_kernel(cpu: CpuUnits) -> bool:
    """Whether bf16 attention goes to pe_dense's kernel (AVX512-BF16, no AMX) rather than torch's."""
    return cpu.bf16 and cpu.vector_isa == "avx512" and not cpu.amx


def int8_screening(cpu: CpuUnits) -> bool:
    """Whether label propagation screens neighbours with int8 products rather than float32 tiles."""
    return cpu.int8_dot and cpu.int8_exact


_assumed: CpuUnits | None = None


def units() -> CpuUnits:
    """This CPU's units (or the ones :func:`assuming` put in place)."""
    return _assumed or detected_units()


@contextlib.contextmanager
def assuming(cpu: CpuUnits):
    """Dispatch as on a CPU with ``cpu``'s units inside the block (benchmarks, tests). Units the CPU lacks
    make the kernels that need them fail: assume fewer units, not more."""
    global _assumed
    previous, _assumed = _assumed, cpu
    try:
        yield cpu
    finally:
        _assumed = previous


@functools.lru_cache(maxsize=None)
def detected_units() -> CpuUnits:
    cpuinfo = _cpuinfo()
    isa = torch.backends.cpu.get_cpu_capability().lower()
    avx512 = isa == "avx512"  # AVX-512 units count only where torch's kernels use them
    amx = torch.cpu._is_amx_tile_supported()
    return CpuUnits(
        model=cpuinfo.get("model name") or platform.processor() or platform.machine() or "cpu",
        vector_isa=isa,
        bf16=(avx512 and torch.cpu._is_avx512_bf16_supported()) or amx,
        amx=amx,
        int8_dot=(avx512 and torch.cpu._is_vnni_supported()) or "avx_vnni" in cpuinfo.get("flags", "").split() or amx,
        int8_exact=int8_products_exact(),
    )


def int8_products_exact() -> bool:
    """Whether ``torch._int_mm`` sums int8 products exactly on this CPU, as the screening bound assumes:
    the largest pair sums of both signs, which a saturating 16-bit lane cannot hold."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(-127, 128, (64, 64), generator=generator, dtype=torch.int8)
    codes[:2] = torch.tensor([[127], [-127]], dtype=torch.int8)
    try:
        products = torch._int_mm(codes, codes.T.contiguous())
    except RuntimeError:  # no int8 matrix product on this platform
        return False
    return torch.equal(products.long(), codes.long() @ codes.long().T)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux; empty elsewhere)."""
    path = Path("/proc/cpuinfo")
    fields = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.strip():
            break  # the first processor ends here
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields
