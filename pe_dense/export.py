"""Deployable encoders: a PE tower traced by torch.export, saved as an ExportedProgram (.pt2) or as ONNX,
then run from the written file and compared with PyTorch (docs/export.md).

ONNX goes through torch's dynamo exporter (it needs onnxscript); the check runs ONNX files in
onnxruntime. Both come with the ``[export]`` extra and are imported only when used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import textwrap
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from .models.configs import PEVisionConfig
from .models.preprocess import NORMALIZE_MEAN, NORMALIZE_STD
from .models.vision_transformer import PEVisionTransformer

FORMATS = ("onnx", "exported-program")
INPUT_NAME = "images"
EMBEDDING_NAME = "embedding"
# The check's limit, relative to the outputs' scale: far above float32 rounding, far below a wrong graph.
TOLERANCE = 1e-3


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


def _require(format: str) -> None:
    """Fail early and clearly where the ``[export]`` extra is missing (torch's ONNX exporter needs onnx and
    onnxscript, the check onnxruntime)."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format '{format}', expected one of {', '.join(FORMATS)}")
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing and format == "onnx":
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install 'pe_dense[export]'")


def check_request(config: PEVisionConfig, format: str, size: tuple[int, int], layers: Sequence[int],
                  pooled: bool) -> None:
    """The checks of :func:`export_encoder` (format, size, layers, pooled output), done on a model without
    weights (meta tensors), so that a bad request fails before any weights are read."""
    _require(format)
    with torch.device("meta"):
        encoder = PEVisionTransformer(config)
    encoder.token_grid(*size)
    EncoderOutputs(encoder, layers, pooled)


@contextlib.contextmanager
def _export_form(encoder: PEVisionTransformer, last: int) -> Iterator[None]:
    """The encoder as it is exported (docs/export.md#the-graph): export mode, and only the blocks it runs,
    so unused ones stay out of the file; restored afterwards."""
    blocks = encoder.transformer.resblocks
    encoder.export_mode, encoder.transformer.resblocks = True, blocks[: last + 1]
    try:
        yield
    finally:
        encoder.export_mode, encoder.transformer.resblocks = False, blocks


def _trace(outputs: EncoderOutputs, size: tuple[int, int], dynamic: bool) -> torch.export.ExportedProgram:
    """torch.export of ``outputs``: batch always dynamic, height and width (multiples of the patch) with ``dynamic``.

    The example batch has 2 images: torch.export fixes a dimension of size 1 to 1.
    """
    from torch.export import Dim

    p = outputs.encoder.patch_size
    shapes = {0: Dim("batch", min=1)}
    if dynamic:
        shapes.update({2: p * Dim("rows", min=1), 3: p * Dim("columns", min=1)})
    example = torch.zeros(2, 3, *size)
    return torch.export.export(outputs, (example,), dynamic_shapes={INPUT_NAME: shapes})


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


def _check(outputs: EncoderOutputs, run: Callable, size: tuple[int, int]) -> float:
    """Run the written file on a random image of ``size`` (a batch of 1, where the trace had 2) and compare
    it with PyTorch: the largest absolute difference, or a ValueError where it is beyond rounding."""
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = outputs(images)
    got = run(images)
    gap = max((a - b).abs().max().item() for a, b in zip(got, expected))
    scale = max(b.abs().max().item() for b in expected)
    if not gap <= TOLERANCE * max(scale, 1.0):  # NaN fails too
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


def export_encoder(
    encoder: PEVisionTransformer,
    out: Path,
    *,
    format: str,
    size: tuple[int, int],
    layers: Sequence[int] = (-1,),
    pooled: bool = False,
    dynamic: bool = False,
) -> dict:
    """Export ``encoder``'s dense maps after ``layers`` (and the CLIP embedding with ``pooled``) to ``out``,
    traced at ``size`` (height, width), then run the written file on random images and compare it with
    PyTorch. Returns the manifest (docs/export.md#the-json-manifest). The encoder is left in eval mode.

    ``dynamic`` keeps height and width free (multiples of the patch size); where the exporter cannot,
    a ValueError says to export per size. ``out`` appears only complete.
    """
    _require(format)
    encoder.token_grid(*size)
    outputs = EncoderOutputs(encoder, layers, pooled).eval()
    out, p = Path(out), encoder.patch_size
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as folder:
        staged = Path(folder) / out.name  # the final name: ONNX names its .data file after it
        try:
            with _export_form(encoder, outputs.last):
                facts = _save(_trace(outputs, size, dynamic), staged, format, outputs.names)
            run = load_export(staged, format)
            gap = _check(outputs, run, size)
            if dynamic:  # a graph can keep its sizes symbolic and still depend on the traced one: try another
                _check(outputs, run, (size[0] + p, size[1] + 2 * p))
        except ImportError:
            raise
        except Exception as e:  # the exporters' messages name graph internals; say what to do instead
            if not dynamic:
                raise
            reason = textwrap.shorten(str(e), 160) or type(e).__name__
            raise ValueError(f"{encoder.config.name} cannot be exported as {format} with dynamic height and "
                             f"width ({reason}); export once per input size instead (without --dynamic)") from e
        _place(staged, out)
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
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, height, width], "dtype": "float32"},
        "input_size": list(size),
        "dynamic": dynamic,
        "patch_size": p,
        "normalisation": {"channels": "RGB", "scale": "pixel / 255", "mean": [NORMALIZE_MEAN] * 3,
                          "std": [NORMALIZE_STD] * 3, "resize": "bilinear to the input size, aspect ratio not kept"},
        "layers": list(layers),
        "outputs": entries,
        "check": {"runtime": _runtime(format), "images": [1, 3, *size], "max_abs_diff": gap},
        "torch": torch.__version__,
    }
