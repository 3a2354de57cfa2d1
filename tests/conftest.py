"""Shared fixtures, and the optional-suite report that ends every test run.

A test marked ``@pytest.mark.suite("name")`` belongs to an optional suite. When the suite's
requirement is missing its tests are skipped with the reason, and the closing summary says so
loudly: a skip is never silent.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path

import pytest
import torch


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _kernels_built() -> bool:
    from pe_dense.ops import kernels_available

    return kernels_available("cpu")


def _bf16_attention_kernel() -> bool:
    from pe_dense.ops.dot_product_attention import bf16_kernel_supported

    return bf16_kernel_supported()


def _mmseg_stack() -> tuple[bool, str]:
    """mmsegmentation with mmengine and mmcv's compiled ops (mmseg.models needs them)."""
    missing = [m for m in ("mmseg", "mmengine", "mmcv") if not _importable(m)]
    if missing:
        return False, f"{', '.join(missing)} not installed (make install builds the mmseg stack; see the README)"
    try:
        import mmcv.ops  # noqa: F401  (the compiled extension)
    except ImportError as e:
        return False, f"mmcv is installed without its compiled ops ({e}); build it from source (see the README)"
    return True, ""


def _official_source(path: str = "apps/detection/detectron2_pe/modeling/backbone/pev1_det.py"):
    """A file of the released PE detection code (default: the ViTDet backbone), in a perception_models
    checkout named by $PE_OFFICIAL_SOURCE, or None."""
    root = os.environ.get("PE_OFFICIAL_SOURCE")
    found = Path(root) / path if root else None
    return found if found is not None and found.is_file() else None


# name -> (available, reason when not)
OPTIONAL_SUITES = {
    "timm": (_importable("timm"), "timm is not installed (pip install -e '.[dev]')"),
    "ops_kernels": (_kernels_built(), "pe_dense._C is not built (pip install --no-build-isolation -e .)"),
    "cpu_bf16_attention": (_bf16_attention_kernel(),
                           "pe_dense._C is not built or this CPU has no AVX512-BF16 (the bf16 attention kernel's "
                           "instructions)"),
    "torch_ms_deform_attn": (_importable("torch_ms_deform_attn"),
                             "torch-ms-deform-attn is not installed (pip install --no-build-isolation -e '.[dev]')"),
    "segment_anything": (_importable("segment_anything"),
                         "segment-anything is not installed (pip install -e '.[dev]')"),
    "sam2": (_importable("sam2"), "sam2 is not installed (SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2)"),
    "detectron2": (_importable("detectron2"),
                   "detectron2 is not installed; it is not on PyPI: pip install --no-build-isolation "
                   "'git+https://github.com/facebookresearch/detectron2.git'"),
    "pe_official_source": (_official_source() is not None and _importable("einops") and _importable("detectron2"),
                           "set PE_OFFICIAL_SOURCE to a checkout of facebookresearch/perception_models (with einops "
                           "and detectron2 installed) to compare with the released detection code (ViTDet backbone, "
                           "DETA)"),
    "mmseg": _mmseg_stack(),
    "notebooks": (_importable("nbclient") and _importable("ipykernel"),
                  "nbclient/ipykernel are not installed (pip install -e '.[dev]')"),
    "cuda": (torch.cuda.is_available(), "no CUDA device on this machine"),
    "export": (all(_importable(m) for m in ("onnx", "onnxscript", "onnxruntime")),
               "onnx, onnxscript and onnxruntime are not installed (pip install -e '.[export]')"),
}

# Suites whose dependencies install from the package registries: CI runs them, never skips them.
REQUIRED_IN_CI = ("mmseg", "export")

_outcomes: dict[str, Counter] = {name: Counter() for name in OPTIONAL_SUITES}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for marker in item.iter_markers("suite"):
            name = marker.args[0]
            if name not in OPTIONAL_SUITES:
                raise pytest.UsageError(f"{item.nodeid}: unknown optional suite '{name}'")
            available, reason = OPTIONAL_SUITES[name]
            if not available and name in REQUIRED_IN_CI and os.environ.get("CI"):
                raise pytest.UsageError(f"optional suite '{name}' must run in CI, but: {reason}")
            if not available:
                item.add_marker(pytest.mark.skip(reason=f"optional suite '{name}' skipped: {reason}"))
                break


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome == "skipped":
        for suite in getattr(report, "suites", ()):
            _outcomes[suite][report.outcome] += 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    suites = {m.args[0] for m in item.iter_markers("suite")}
    if report.skipped:  # a skip counts against the suites that were missing, not the others
        suites = {s for s in suites if not OPTIONAL_SUITES[s][0]} or suites
    report.suites = suites


def pytest_terminal_summary(terminalreporter):
    terminalreporter.section("optional suites")
    for name, (available, reason) in OPTIONAL_SUITES.items():
        counts = _outcomes[name]
        if not available:
            terminalreporter.write_line(f"SKIPPED  {name}: {reason} ({counts['skipped']} tests)")
        elif counts:
            summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            terminalreporter.write_line(f"RAN      {name}: {summary}")
        else:
            terminalreporter.write_line(f"NOT RUN  {name}: available, but no test of it was selected")
    from pe_dense.ops import kernels_available

    compiled = "compiled" if kernels_available("cuda") else "NOT compiled (build with FORCE_CUDA=1)"
    terminalreporter.write_line(f"INFO     pe_dense._C CUDA kernels: {compiled}")


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with seeded random values of a sane scale (norm gains near 1), so
    equivalence tests cannot pass on an identity-like initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and name.endswith("weight"):  # LayerNorm gains
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("gamma"):  # layerscale
                p.copy_(0.1 + 0.02 * noise)
            elif name in ("class_embedding", "positional_embedding", "attn_pool.probe"):
                p.copy_(0.5 * noise)
            elif p.ndim == 1:  # biases
                p.copy_(0.02 * noise)
            else:  # fan-in scaled so activations stay O(1) through the blocks
                fan_in = p[0].numel() if name != "proj" else p.shape[0]
                p.copy_(noise / fan_in**0.5)
    return model


@pytest.fixture(scope="session")
def t16_weights(tmp_path_factory):
    """A PE-Spatial-T16-512 checkpoint file with seeded random weights, for CLI tests."""
    from pe_dense.models import build_encoder

    path = tmp_path_factory.mktemp("weights") / "PE-Spatial-T16-512.pt"
    torch.save(randomize_(build_encoder("PE-Spatial-T16-512"), seed=5).state_dict(), path)
    return path


@pytest.fixture
def tiny_config():
    """A PE-Spatial-T16-512 shaped model, two blocks deep: fast, with a class token."""
    from pe_dense.models import get_config

    return get_config("PE-Spatial-T16-512").replace(depth=2, image_size=128)
