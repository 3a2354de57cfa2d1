"""Shared fixtures, and the optional-suite report that ends every test run.

A test marked ``@pytest.mark.suite("name")`` belongs to an optional suite. When the suite's
requirement is missing its tests are skipped with the reason, and the closing summary says so
loudly: a skip is never silent. Tests marked ``slow`` (the slow tier, ``make test-slow``) are left out
of ``make test``, and the summary counts them as not run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _kernels_built() -> bool:
    from pe_dense.ops import kernels_available

    return kernels_available("cpu")


def _bf16_attention_kernel() -> bool:
    from pe_dense.ops.dot_product_attention import bf16_kernel_supported

    return bf16_kernel_supported()


def _int8_screening() -> bool:
    from pe_dense.tracking.propagation import screening_available

    return screening_available(torch.zeros(1))


def _mmseg_stack() -> tuple[bool, str]:
    """mmsegmentation with mmengine and mmcv's compiled ops (mmseg.models needs them)."""
    missing = [m for m in ("mmseg", "mmengine", "mmcv") if not _importable(m)]
    if missing:
        return False, f"{', '.join(missing)} not installed (make install builds the mmseg stack; docs/install.md)"
    try:
        import mmcv.ops  # noqa: F401  (the compiled extension)
    except ImportError as e:
        return False, f"mmcv is installed without its compiled ops ({e}); build it from source (docs/install.md)"
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
    "int8_screening": (_int8_screening(),
                       "pe_dense._C is not built or this CPU's int8 products are not exact (no VNNI or AMX-INT8): "
                       "label propagation runs its float32 tiles here"),
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
_slow_tier = Counter()  # "deselected", or the outcomes of the slow tests that ran


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


def pytest_deselected(items):
    _slow_tier["deselected"] += sum(item.get_closest_marker("slow") is not None for item in items)


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: its collection is the controller's count
        session.config.workeroutput["slow_deselected"] = _slow_tier["deselected"]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's controller collects nothing itself: every worker collected the whole suite."""
    _slow_tier["deselected"] = getattr(node, "workeroutput", {}).get("slow_deselected", _slow_tier["deselected"])


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome == "skipped":
        for suite in getattr(report, "suites", ()):
            _outcomes[suite][report.outcome] += 1
        if "slow" in report.keywords:
            _slow_tier[report.outcome] += 1


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
    ran = {k: n for k, n in _slow_tier.items() if k != "deselected"}
    if ran:
        terminalreporter.write_line(f"RAN      slow tier: {', '.join(f'{n} {k}' for k, n in sorted(ran.items()))}")
    if _slow_tier["deselected"]:
        count = _slow_tier["deselected"]
        terminalreporter.write_line(f"NOT RUN  slow tier: {count} tests, training runs of minutes and a speed check "
                                    "(make test-slow runs them)")
    from pe_dense.ops import kernels_available

    compiled = "compiled" if kernels_available("cuda") else "NOT compiled (build with FORCE_CUDA=1)"
    terminalreporter.write_line(f"INFO     pe_dense._C CUDA kernels: {compiled}")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, whatever ran before it (or on another worker)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


class CodePayload:
    """Unpickling this would create a file: proof that code ran (for the tests of safe loading)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


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


@pytest.fixture(scope="session", autouse=True)
def _generated_datasets(tmp_path_factory):
    """The built-in datasets that commands and configs generate on first use go to this session's folder,
    never to a checkout's datasets/."""
    saved = os.environ.get("PE_DENSE_DATASETS")
    os.environ["PE_DENSE_DATASETS"] = str(tmp_path_factory.mktemp("generated_datasets"))
    yield
    if saved is None:
        del os.environ["PE_DENSE_DATASETS"]
    else:
        os.environ["PE_DENSE_DATASETS"] = saved


# mmsegmentation: the dataloaders of every config, and small splits of the built-in datasets
MMSEG_LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
SCENES_IMAGES = {"training": 16, "validation": 8}
DEPTH_SCENES_IMAGES = {"train": 16, "test": 8}


def mmseg_data_options(root, images: dict = None, serial: bool = True) -> dict:
    """Config overrides: every dataloader reads ``root`` (with ``images``, the first training and evaluation
    images of a built-in dataset's splits), in the main process when ``serial``."""
    options = {f"{loader}.dataset.data_root": str(root) for loader in MMSEG_LOADERS}
    if images is not None:
        train, evaluation = images.values()
        options.update({f"{loader}.dataset.num_images": count
                        for loader, count in zip(MMSEG_LOADERS, (train, evaluation, evaluation))})
    if serial:
        options.update({f"{loader}.{key}": value for loader in MMSEG_LOADERS
                        for key, value in (("num_workers", 0), ("persistent_workers", False))})
    return options


def cfg_options(options: dict) -> list[str]:
    """``options`` as tools/train_seg.py's --cfg-options arguments."""
    return [f"{key}={value}" for key, value in options.items()]


def _small_splits(tmp_path_factory, name: str, ensure, images: dict[str, int]):
    """A built-in dataset generated under a session folder, each split with its number of ``images``."""
    root = tmp_path_factory.mktemp("datasets") / name
    for split, count in images.items():
        ensure(root, splits=(split,), num_images=count)
    return root


@pytest.fixture(scope="session")
def scenes_root(tmp_path_factory):
    """Small splits of the built-in scenes (SCENES_IMAGES)."""
    from pe_dense.data.scenes import ensure_scenes

    return _small_splits(tmp_path_factory, "pe_scenes", ensure_scenes, SCENES_IMAGES)


@pytest.fixture(scope="session")
def depth_scenes_root(tmp_path_factory):
    """Small splits of the built-in depth scenes (DEPTH_SCENES_IMAGES)."""
    from pe_dense.data.depth_scenes import ensure_depth_scenes

    return _small_splits(tmp_path_factory, "pe_depth_scenes", ensure_depth_scenes, DEPTH_SCENES_IMAGES)


def load_tool(name: str):
    """A script of tools/ as a module (its main(argv) runs in the test's process)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def train_seg():
    """tools/train_seg.py's main(argv)."""
    return load_tool("train_seg").main


@pytest.fixture(scope="session")
def trained_segmenter(scenes_root, tmp_path_factory):
    """The linear probe on the small scenes after two iterations: its checkpoint."""
    from mmengine.runner import Runner

    from pe_dense.integrations.mmseg.training import load_config

    work = tmp_path_factory.mktemp("linear_scenes")
    cfg = load_config(str(ROOT / "configs/segmentation/scenes/linear_PEspatial_T_scenes.py"), work_dir=str(work),
                      cfg_options={**mmseg_data_options(scenes_root, SCENES_IMAGES), "train_cfg.max_iters": 2,
                                   "train_cfg.val_interval": 100, "default_hooks.checkpoint.interval": 2})
    Runner.from_cfg(cfg).train()
    return work / "iter_2.pth"


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


# Datasets in their owners' formats (docs/custom_data.md)

def write_coco(root: Path, categories=((7, "widget"), (3, "gadget")), images=3, size=(48, 64), masks=True,
               name="annotations.json") -> Path:
    """A COCO-format json (non-contiguous category ids, ``images`` images of ``size`` (h, w) in ``root/pics``),
    one box per image and category, with a rectangle polygon when ``masks``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "pics").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in categories]}
    height, width = size
    for index in range(images):
        file_name = f"shot_{index}.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / "pics" / file_name)
        coco["images"].append({"id": 100 + index, "file_name": file_name, "width": width, "height": height})
        for k, (category, _) in enumerate(categories[:4]):
            x, y, w, h = 4 + 3 * k, 5 + 2 * k, width // 3, height // 3
            annotation = {"id": len(coco["annotations"]) + 1, "image_id": 100 + index, "category_id": category,
                          "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            if masks:
                annotation["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            coco["annotations"].append(annotation)
    path = root / name
    path.write_text(json.dumps(coco))
    return path
