"""The floors of the package run one way: the command line -> alignment, projects, feature
extraction and the probe -> integrations and export -> core (models, ops, data, tracking, viz), with no
import cycles, and the core imports nothing heavier than torch/numpy-level libraries, so it works where no
framework is installed. The scripts in tools/ stand beside the command line and never import it.

Every import statement counts, also the lazy ones inside functions: a lazy import still ties the floors.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pe_dense": ROOT / "pe_dense", "pe_deta": ROOT / "projects" / "DETA" / "pe_deta"}

CORE = ("models", "ops", "data", "tracking", "viz", "atomic_files", "arguments", "configs", "cpu", "distributed",
        "feature_store", "_C")
FLOORS = {  # unit -> floor; a unit imports its own floor's units only where both are core
    **{f"pe_dense.{unit}": 0 for unit in CORE}, "pe_dense": 0,
    "pe_dense.integrations": 1, "pe_dense.integrations.detectron2": 1, "pe_dense.integrations.mmseg": 1,
    "pe_dense.integrations.sam": 1,
    "pe_dense.export": 1,  # an integration of ONNX's tools, beside the others
    "pe_dense.align": 2, "pe_deta": 2, "pe_dense.feature_extraction": 2,
    "pe_dense.probe": 2,  # runs the mmseg integration's probes and the core's DAVIS propagation
    "pe_dense.cli": 3, "pe_dense.__main__": 4,  # python -m pe_dense: runs the command line
}
# What the core may import besides the standard library: torch/numpy-level libraries. timm is one (a library of
# torch models, no framework around them): the core wraps its ViTs as encoders (pe_dense/models/timm_encoder.py)
# so that every integration and the probe can use them, importing it only when a timm: model is asked for.
CORE_LIBRARIES = {"torch", "torchvision", "numpy", "PIL", "scipy", "skimage", "cv2", "av", "kornia", "matplotlib",
                  "safetensors", "huggingface_hub", "tqdm", "pycocotools", "timm"}
# Frameworks, each the business of one integration (or of the project built on it).
FRAMEWORKS = {
    "pe_dense.integrations.detectron2": {"detectron2", "fvcore", "iopath"},
    "pe_dense.integrations.mmseg": {"mmseg", "mmcv", "mmengine"},
    "pe_dense.integrations.sam": {"segment_anything", "sam2", "hydra", "omegaconf"},
    "pe_dense.export": {"onnx", "onnxscript", "onnxruntime"},
}
FRAMEWORKS["pe_deta"] = FRAMEWORKS["pe_dense.integrations.detectron2"]


def _module_name(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((package, *parts))


def _is_module(name: str) -> bool:
    package, *parts = name.split(".")
    if package not in PACKAGES:
        return False
    base = PACKAGES[package].joinpath(*parts)
    return (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
            or any(base.parent.glob(f"{base.name}.*.so")))


def _imports(package: str, path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from a import b`` is ``a.b`` where b is a module."""
    module = _module_name(package, path)
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + [node.module] if node.module else
                            here[:len(here) - node.level + 1]) if node.level else node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base)
    return found - {"__future__"}


def _unit(module: str) -> str:
    """The floor unit a module belongs to: the longest key of FLOORS that prefixes it."""
    return max((u for u in FLOORS if module == u or module.startswith(u + ".")), key=len)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    edges = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            edges[_module_name(package, path)] = _imports(package, path)
    return edges


def test_every_module_has_a_floor(graph):
    for module in graph:
        assert _unit(module) in FLOORS, module


def test_floors_run_one_way(graph):
    wrong = []
    for module, imported in graph.items():
        unit = _unit(module)
        for name in imported:
            if name.split(".")[0] not in PACKAGES:
                continue
            target = _unit(name)
            if target == unit or target == "pe_dense.integrations" or FLOORS[target] < FLOORS[unit]:
                continue
            if FLOORS[target] == FLOORS[unit] == 0:  # core units may use each other (cycles are checked below)
                continue
            wrong.append(f"{module} imports {name} ({unit} is floor {FLOORS[unit]}, {target} floor {FLOORS[target]})")
    assert not wrong, "imports against the floors:\n" + "\n".join(wrong)


def test_core_imports_only_torch_numpy_level_libraries(graph):
    wrong = [f"{module} imports {name}" for module, imported in graph.items() if FLOORS[_unit(module)] == 0
             for name in imported if name.split(".")[0] not in {*PACKAGES, *CORE_LIBRARIES, *sys.stdlib_module_names}]
    assert not wrong, "the core must work without any framework:\n" + "\n".join(wrong)


def test_each_framework_is_imported_by_its_integration_only(graph):
    owners = defaultdict(set)
    for unit, names in FRAMEWORKS.items():
        for name in names:
            owners[name].add(unit)
    wrong = [f"{module} imports {name}" for module, imported in graph.items() for name in imported
             if name.split(".")[0] in owners and _unit(module) not in owners[name.split(".")[0]]]
    assert not wrong, "frameworks outside their integration:\n" + "\n".join(wrong)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_modules(graph):
    internal = {m: {n for n in imported if n in graph and n != m} for m, imported in graph.items()}
    assert _cycles(internal) == []


def test_no_import_cycles_between_units(graph):
    units = defaultdict(set)
    for module, imported in graph.items():
        for name in imported:
            if name.split(".")[0] in PACKAGES and _unit(name) != _unit(module):
                units[_unit(module)].add(_unit(name))
    assert _cycles(units) == []


def test_tools_never_import_the_command_line():
    """What a tool shares with a command (tracking options, argument types) lives below the command line."""
    wrong = []
    for path in sorted((ROOT / "tools").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            wrong += [f"{path.name} imports {n}" for n in names if n == "pe_dense.cli" or n.startswith("pe_dense.cli.")]
    assert not wrong


def test_the_checks_see_a_violation():
    """The walk itself: a core module importing an integration, a framework and a cycle are all caught."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _unit("pe_dense.tracking.run") == "pe_dense.tracking"
    assert _unit("pe_dense.integrations.sam.models") == "pe_dense.integrations.sam"
    assert _is_module("pe_dense.integrations.sam.prompts") and not _is_module("pe_dense.models.build_encoder")
