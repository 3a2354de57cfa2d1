"""The CPU dispatch rules (pe_dense.cpu) for each kind of CPU, forced, and the dispatch sites that follow
them: bf16 precision, the bf16 attention kernel, int8 screening in label propagation."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from pe_dense import cpu
from pe_dense.cpu import CpuUnits
from pe_dense.models.inference import check_precision
from pe_dense.ops import dot_product_attention
from pe_dense.tracking import LabelPropagator, PropagationConfig
from pe_dense.tracking.propagation import screening_available

# kind -> (units, (native bf16, bf16 attention kernel, int8 screening))
KINDS = {
    "AVX2 only (EPYC Zen 1)": (CpuUnits("EPYC 7551", "avx2", False, False, False, False), (False, False, False)),
    "AVX-512 without VNNI (Xeon Skylake)": (CpuUnits("Xeon 8168", "avx512", False, False, False, False),
                                            (False, False, False)),
    "AVX512-VNNI (Xeon Cascade Lake)": (CpuUnits("Xeon 8280", "avx512", False, False, True, True),
                                        (False, False, True)),
    "AVX-VNNI (Core Alder Lake)": (CpuUnits("Core i9-12900", "avx2", False, False, True, True), (False, False, True)),
    "AVX512-BF16 and VNNI (EPYC Zen 4)": (CpuUnits("EPYC 9654", "avx512", True, False, True, True),
                                          (True, True, True)),
    "AMX (Xeon Sapphire Rapids)": (CpuUnits("Xeon 8480", "avx512", True, True, True, True), (True, False, True)),
    "VNNI whose products torch sums inexactly": (CpuUnits("?", "avx512", True, False, True, False),
                                                 (True, True, False)),
}
AVX2_ONLY = KINDS["AVX2 only (EPYC Zen 1)"][0]


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_cpu_takes_its_paths(kind):
    units, expected = KINDS[kind]
    assert (cpu.native_bf16(units), cpu.bf16_attention_kernel(units), cpu.int8_screening(units)) == expected


def test_result_kinds():
    assert [KINDS[k][0].kind for k in KINDS] == ["avx2", "avx512", "avx512", "avx2", "avx512", "amx", "avx512"]
    assert cpu.units().record()["kind"] == cpu.units().kind


def test_the_dispatch_sites_follow_the_units():
    features = torch.nn.functional.normalize(torch.randn(6, 7, 8), dim=2).permute(2, 0, 1)
    labels = torch.nn.functional.one_hot(torch.randint(0, 2, (6, 7)), 2).permute(2, 0, 1).float()
    with cpu.assuming(AVX2_ONLY):
        assert cpu.units() is AVX2_ONLY
        with pytest.raises(ValueError, match="no native bf16"):
            check_precision("cpu", "bf16")
        assert not dot_product_attention.bf16_kernel_preferred()
        assert not screening_available(features)
        assert LabelPropagator(features, labels, PropagationConfig()).step_size is None  # the float32 tiles
    assert cpu.units() is cpu.detected_units()
    with cpu.assuming(KINDS["AMX (Xeon Sapphire Rapids)"][0]):
        check_precision("cpu", "bf16")
        assert not dot_product_attention.bf16_kernel_preferred()  # torch's attention on the AMX tiles


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the instruction caps are x86's")
def test_an_avx2_cap_reads_as_an_avx2_only_cpu():
    """Capped to AVX2 as a CPU without AVX-512 or VNNI is, oneDNN sums int8 products in saturating 16-bit
    pairs: the screening bound would not hold, and propagation keeps the float32 tiles."""
    code = ("from pe_dense import cpu; u = cpu.units(); "
            "print(u.kind, u.int8_exact, cpu.int8_screening(u), cpu.native_bf16(u), cpu.bf16_attention_kernel(u))")
    caps = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **caps}, capture_output=True,
                            text=True, check=True)
    assert result.stdout.split() == ["avx2", "False", "False", "False", "False"]
