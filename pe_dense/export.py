"""Deployable models: a PE tower, or a whole task model (images in, class map or depth out), traced by
torch.export in fp32, fp16 or bf16, saved as an ExportedProgram (.pt2) or as ONNX, then run from the written
file and compared with PyTorch in fp32 (docs/export.md).

A whole task model comes from its framework's integration as a plain torch module (for mmseg:
pe_dense.integrations.mmseg.deploy), so that this module, the only one importing the ONNX stack, needs
no framework.

ONNX goes through torch's dynamo exporter (it needs onnxscript); the check runs ONNX files in
onnxruntime. Both come with the ``[export]`` extra and are imported only when used.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import os
import tempfile
import textwrap
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .data.samples import sample_image
from .models.configs import PEVisionConfig
from .models.preprocess import NORMALIZE_MEAN, NORMALIZE_STD
from .models.vision_transformer import PEVisionTransformer

FORMATS = ("onnx", "exported-program")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
INPUT_NAME = "images"
EMBEDDING_NAME = "embedding"
# The checks' limits per precision of the exported graph, against PyTorch in fp32: far above that precision's
# rounding (measured figures in docs/export.md#precisions), far below a wrong graph.
# Encoder maps: the largest difference relative to the outputs' scale.
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 1e-1}
# Whole models: the least fraction of pixels of the same class, the largest relative depth error.
CLASS_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "bf16": 0.95}
DEPTH_RELATIVE_ERROR = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}


class EncoderOutputs(nn.Module):
    """What an export computes: images (B, 3, H, W) -> the dense map (B, C, H/p, W/p) after each of
    ``layers`` and, with ``pooled`` (Core models), the CLIP embedding (B, output_dim), in one pass."""

    def __init__(self, encoder: PEVisionTransformer, layers: Sequence[int] = (-1,), pooled: bool = False):
        super().__init__()
        if not layers:
            raise ValueError("no layers to export")
        self.blocks = [encoder.layer_index(i) for i in layers]
        if len(set(self.blocks)) < len(self.blocks):
            raise ValueError(f"layers {list(layers)} name the same block twice")
        if pooled and encoder.attn_pool is None:
            raise ValueError(f"{encoder.config.name} has no CLIP embedding to export (only PE-Core models do)")
        self.encoder = encoder
        self.pooled = pooled
        self.last = encoder.num_blocks - 1 if pooled else max(self.blocks)  # the pooled head reads the last block

    @property
    def names(self) -> list[str]:
        return [f"layer_{b}" for b in self.blocks] + [EMBEDDING_NAME] * self.pooled

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, pos = self.encoder.embed(images)
        found = {}
        for i, tokens in self.encoder.transformer.run(x, pos, self.last):
            if i in self.blocks:
                found[i] = tokens
        outputs = [self.encoder._to_map(found[i], pos) for i in self.blocks]
        if self.pooled:
            outputs.append(self.encoder.pool(self.encoder.ln_post(tokens)))
        return tuple(outputs)


def require(format: str, dtype: str = "fp32") -> None:
    """Fail early and clearly where the ``[export]`` extra is missing (torch's ONNX exporter needs onnx and
    onnxscript, the check onnxruntime), or where the runtime cannot run ``dtype``, so the file could not be
    checked."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format '{format}', expected one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown precision '{dtype}', expected one of {', '.join(DTYPES)}")
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing and format == "onnx":
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install 'pe_dense[export]'")
    if format == "onnx" and not _onnxruntime_runs(dtype):
        import onnxruntime

        raise ValueError(f"onnxruntime {onnxruntime.__version__} cannot run {dtype} convolutions on this CPU, so a "
                         f"{dtype} ONNX file could not be checked: export fp16, or --format exported-program")


@functools.cache
def _onnxruntime_runs(dtype: str) -> bool:
    """Whether onnxruntime's CPU provider loads and runs a convolution in ``dtype`` (every exported model
    starts with one, the patch embedding), found by running a one-node graph."""
    if dtype == "fp32":
        return True
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    element = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[dtype]
    weight = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xl"], to=element), helper.make_node("Cast", ["w"], ["wl"], to=element),
         helper.make_node("Conv", ["xl", "wl"], ["yl"]), helper.make_node("Cast", ["yl"], ["y"], to=TensorProto.FLOAT)],
        "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return bool(np.allclose(session.run(None, {"x": np.ones((1, 1, 2, 2), np.float32)})[0], 1.0))
    except Exception:  # onnxruntime's errors (invalid graph, no kernel) derive from Exception alone
        return False


def check_request(config: PEVisionConfig, format: str, size: tuple[int, int], layers: Sequence[int],
                  pooled: bool, dtype: str = "fp32") -> None:
    """The checks of :func:`export_encoder` (format, precision, size, layers, pooled output), done on a model
    without weights (meta tensors), so that a bad request fails before any weights are read."""
    require(format, dtype)
    with torch.device("meta"):
        encoder = PEVisionTransformer(config)
    encoder.token_grid(*size)
    EncoderOutputs(encoder, layers, pooled)


@contextlib.contextmanager
def _export_mode(module: nn.Module) -> Iterator[None]:
    """Every PE encoder in ``module`` in export mode (docs/export.md#the-graph); restored afterwards."""
    encoders = [m for m in module.modules() if isinstance(m, PEVisionTransformer)]
    for encoder in encoders:
        encoder.export_mode = True
    try:
        yield
    finally:
        for encoder in encoders:
            encoder.export_mode = False


@contextlib.contextmanager
def _export_form(encoder: PEVisionTransformer, last: int) -> Iterator[None]:
    """The encoder as it is exported: export mode, and only the blocks it runs, so unused ones stay out of
    the file; restored afterwards."""
    blocks = encoder.transformer.resblocks
    encoder.transformer.resblocks = blocks[: last + 1]
    try:
        with _export_mode(encoder):
            yield
    finally:
        encoder.transformer.resblocks = blocks


class _Precision(nn.Module):
    """``module`` computing in ``dtype``: float32 images in, cast inside the graph, float outputs back in
    float32, so that a file's interface does not depend on its precision."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module, self.dtype = copy.deepcopy(module).to(dtype), dtype

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.module(images.to(self.dtype))
        return tuple(o.float() if o.is_floating_point() else o for o in outputs)


def _in_precision(module: nn.Module, dtype: str) -> nn.Module:
    return module if dtype == "fp32" else _Precision(module, DTYPES[dtype]).eval()


def _trace(module: nn.Module, size: tuple[int, int], dynamic: bool, multiple: int) -> torch.export.ExportedProgram:
    """torch.export of ``module``: batch always dynamic, height and width (multiples of ``multiple``) with
    ``dynamic``.

    The example batch has 2 images: torch.export fixes a dimension of size 1 to 1.
    """
    from torch.export import Dim

    shapes = {0: Dim("batch", min=1)}
    if dynamic:
        shapes.update({2: multiple * Dim("rows", min=1), 3: multiple * Dim("columns", min=1)})
    example = torch.zeros(2, 3, *size)
    return torch.export.export(module, (example,), dynamic_shapes={INPUT_NAME: shapes})


def _save(program: torch.export.ExportedProgram, path: Path, format: str, names: list[str]) -> dict:
    """Write ``program`` in ``format``; returns format facts for the manifest."""
    if format == "exported-program":
        torch.export.save(program, path)
        return {}
    onnx_program = torch.onnx.export(program, dynamo=True, input_names=[INPUT_NAME], output_names=names,
                                     verbose=False)
    onnx_program.save(path)  # over 2 GB of weights, they go to a .data file beside it
    return {"opset": onnx_program.model.opset_imports[""]}


def load_export(path: Path, format: str) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """An exported file as a function of images: ONNX in onnxruntime (CPU), an ExportedProgram reloaded."""
    if format == "exported-program":
        module = torch.export.load(path).module()

        def run(images):
            with torch.no_grad():
                return list(module(images))

        return run
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: [torch.from_numpy(out) for out in session.run(None, {INPUT_NAME: images.numpy()})]


def _check(outputs: nn.Module, run: Callable, size: tuple[int, int], dtype: str) -> float:
    """Run the written file on a random image of ``size`` (a batch of 1, where the trace had 2) and compare
    it with PyTorch in fp32: the largest absolute difference, or a ValueError where it is beyond the
    precision's tolerance."""
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = outputs(images)
    got = run(images)
    gap = max((a - b).abs().max().item() for a, b in zip(got, expected))
    scale = max(b.abs().max().item() for b in expected)
    if not gap <= TOLERANCE[dtype] * max(scale, 1.0):  # NaN fails too
        raise ValueError(f"the exported file differs from PyTorch by {gap:.2g} at {size[0]}x{size[1]}")
    return gap


def _runtime(format: str) -> str:
    if format == "exported-program":
        return f"torch.export.load (torch {torch.__version__})"
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} (CPU)"


def _place(staged: Path, out: Path) -> None:
    """Move what was written beside ``staged`` (the file, an ONNX .data file) into ``out``'s folder, the
    file itself last, so that a complete file is never missing its weights."""
    for path in sorted(staged.parent.iterdir(), key=lambda p: p == staged):
        os.replace(path, out.parent / (out.name if path == staged else path.name))


def _export_checked(module: nn.Module, out: Path, *, format: str, dtype: str, size: tuple[int, int], dynamic: bool,
                    multiple: int, names: list[str], check: Callable, name: str) -> tuple[dict, object]:
    """Trace ``module`` in ``dtype`` at ``size``, write it as ``format``, run the written file through
    ``check(run, size)`` (again at a second size with ``dynamic``), and only then put it at ``out``.
    Returns (the format's facts, the first check's result)."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as folder:
        staged = Path(folder) / out.name  # the final name: ONNX names its .data file after it
        try:
            with _export_mode(module):
                facts = _save(_trace(_in_precision(module, dtype), size, dynamic, multiple), staged, format, names)
            run = load_export(staged, format)
            result = check(run, size)
            if dynamic:  # a graph can keep its sizes symbolic and still depend on the traced one: try another
                check(run, (size[0] + multiple, size[1] + 2 * multiple))
        except ImportError:
            raise
        except Exception as e:  # the exporters' messages name graph internals; say what to do instead
            if not dynamic:
                raise
            reason = textwrap.shorten(str(e), 160) or type(e).__name__
            raise ValueError(f"{name} cannot be exported as {format} with dynamic height and width ({reason}); "
                             f"export once per input size instead (without --dynamic)") from e
        _place(staged, out)
    return facts, result


def export_encoder(
    encoder: PEVisionTransformer,
    out: Path,
    *,
    format: str,
    size: tuple[int, int],
    layers: Sequence[int] = (-1,),
    pooled: bool = False,
    dynamic: bool = False,
    dtype: str = "fp32",
) -> dict:
    """Export ``encoder``'s dense maps after ``layers`` (and the CLIP embedding with ``pooled``) to ``out``,
    traced at ``size`` (height, width) in ``dtype``, then run the written file on random images and compare it
    with PyTorch. Returns the manifest (docs/export.md#the-json-manifest). The encoder is left in eval mode.

    ``dynamic`` keeps height and width free (multiples of the patch size); where the exporter cannot,
    a ValueError says to export per size. ``out`` appears only complete.
    """
    require(format, dtype)
    encoder.token_grid(*size)
    outputs = EncoderOutputs(encoder, layers, pooled).eval()
    out, p = Path(out), encoder.patch_size
    with _export_form(encoder, outputs.last):
        facts, gap = _export_checked(outputs, out, format=format, dtype=dtype, size=size, dynamic=dynamic,
                                     multiple=p, names=outputs.names, name=encoder.config.name,
                                     check=lambda run, at: _check(outputs, run, at, dtype))
    height, width = ("height", "width") if dynamic else size
    grid = [f"height/{p}", f"width/{p}"] if dynamic else [size[0] // p, size[1] // p]
    entries = [{"name": name, "layer": layer, "block": block, "shape": ["batch", encoder.width, *grid]}
               for name, layer, block in zip(outputs.names, layers, outputs.blocks)]
    if pooled:
        entries.append({"name": EMBEDDING_NAME, "shape": ["batch", encoder.config.output_dim]})
    return {
        "model": encoder.config.name,
        "format": format,
        "file": out.name,
        **facts,
        "dtype": dtype,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, height, width], "dtype": "float32"},
        "input_size": list(size),
        "dynamic": dynamic,
        "patch_size": p,
        "normalisation": {"channels": "RGB", "scale": "pixel / 255", "mean": [NORMALIZE_MEAN] * 3,
                          "std": [NORMALIZE_STD] * 3, "resize": "bilinear to the input size, aspect ratio not kept"},
        "layers": list(layers),
        "outputs": entries,
        "check": {"runtime": _runtime(format), "images": [1, 3, *size], "max_abs_diff": gap,
                  "tolerance": TOLERANCE[dtype]},
        "torch": torch.__version__,
    }


def check_images(size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """A photograph (the built-in coffee sample, resized) as the whole-model checks' input: (batch, 3, H, W)
    float RGB in [0, 255], flipped left to right in every other image. Natural images, unlike noise, give
    the classes and depths the model was made for."""
    from PIL import Image

    image = sample_image("coffee").resize((size[1], size[0]), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
    return torch.stack([x.flip(-1) if i % 2 else x for i in range(batch)])


def task_agreement(task: str, got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> dict:
    """How far an exported whole model's outputs are from PyTorch's: for segmentation the fraction of
    pixels with the same class and the largest logit difference, for depth the largest and mean depth
    error relative to PyTorch's depth."""
    if task == "segmentation":
        return {"class_agreement": (got[0] == expected[0]).double().mean().item(),
                "logits_max_abs_diff": (got[1] - expected[1]).abs().max().item()}
    relative = (got[0] - expected[0]).abs() / expected[0].abs().clamp_min(1e-6)
    return {"depth_max_relative_error": relative.max().item(), "depth_mean_relative_error": relative.mean().item()}


def _within_bounds(task: str, dtype: str, agreement: dict) -> bool:
    if task == "segmentation":
        return agreement["class_agreement"] >= CLASS_AGREEMENT[dtype]
    return agreement["depth_max_relative_error"] <= DEPTH_RELATIVE_ERROR[dtype]  # NaN fails


def bounds(task: str, dtype: str) -> dict:
    """The check's bound for ``task`` at ``dtype``, as the manifest states it."""
    if task == "segmentation":
        return {"min_class_agreement": CLASS_AGREEMENT[dtype]}
    return {"max_depth_relative_error": DEPTH_RELATIVE_ERROR[dtype]}


def _check_task(model: nn.Module, run: Callable, size: tuple[int, int], dtype: str) -> dict:
    """Run the written file on :func:`check_images` at ``size`` and compare it with ``model`` in PyTorch
    (fp32): :func:`task_agreement`, or a ValueError where it is outside the precision's bound."""
    images = check_images(size)
    with torch.no_grad():
        expected = model(images)
    agreement = task_agreement(model.task, run(images), expected)
    if not _within_bounds(model.task, dtype, agreement):
        shown = ", ".join(f"{k} {v:.4g}" for k, v in agreement.items())
        raise ValueError(f"the exported {dtype} file disagrees with PyTorch at {size[0]}x{size[1]}: {shown} "
                         f"(bound: {', '.join(f'{k} {v:g}' for k, v in bounds(model.task, dtype).items())})")
    return agreement


def export_whole_model(model: nn.Module, out: Path, *, format: str, size: tuple[int, int], dynamic: bool = False,
                       dtype: str = "fp32", name: str = "the model") -> dict:
    """Export a whole task model to ``out``, traced at ``size`` in ``dtype``, then run the written file on a
    photograph and compare it with ``model`` in PyTorch (fp32), by the task's metric
    (docs/export.md#whole-models). Returns the manifest's export facts; ``out`` appears only complete.

    ``model`` maps (B, 3, H, W) float RGB images in [0, 255] to its outputs and has ``task``
    ("segmentation": int64 classes and float logits; "depth": depth in metres), ``output_names`` and
    ``size_divisor`` (a dynamic graph takes multiples of it), as pe_dense.integrations.mmseg.deploy's.
    """
    require(format, dtype)
    out = Path(out)
    model.eval()
    d = model.size_divisor
    facts, agreement = _export_checked(model, out, format=format, dtype=dtype, size=size, dynamic=dynamic,
                                       multiple=d, names=model.output_names, name=name,
                                       check=lambda run, at: _check_task(model, run, at, dtype))
    height, width = (f"height (a multiple of {d})", f"width (a multiple of {d})") if dynamic else size
    shapes = {"classes": ["batch", height, width], "logits": ["batch", "classes", height, width],
              "depth": ["batch", 1, height, width]}
    return {
        "format": format,
        "file": out.name,
        **facts,
        "dtype": dtype,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, height, width], "dtype": "float32"},
        "input_size": list(size),
        "dynamic": dynamic,
        "outputs": [{"name": n, "shape": shapes[n], "dtype": "int64" if n == "classes" else "float32"}
                    for n in model.output_names],
        "check": {"runtime": _runtime(format), "images": [1, 3, *size], "reference": "PyTorch, fp32",
                  **agreement, **bounds(model.task, dtype)},
        "torch": torch.__version__,
    }
