"""Trained detectron2 detectors (Mask R-CNN, DETA) exported whole through detectron2's own export path
(``pe-dense export --config ... --format torchscript``, docs/export.md#detectors):
``detectron2.export.TracingAdapter`` flattens the model's dict inputs and ``Instances`` outputs into tensors,
``torch.jit.trace`` records the graph (PE encoders in export mode, RoPE in real arithmetic; deformable
attention on its pure-PyTorch path, so the file needs no compiled pe_dense op), and the written file, loaded
back, must give PyTorch's detections before it is put in place.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from detectron2.export import TracingAdapter
from detectron2.structures import pairwise_iou

from ...atomic_files import atomic_output
from ...models.vision_transformer import PEVisionTransformer
from ...ops import MSDeformAttn
from .predict import Detector

# The check's bounds: every detection of PyTorch's found again, boxes overlapping almost exactly, same scores.
MIN_IOU = 0.99
MAX_SCORE_DIFF = 1e-4


def detection_agreement(got, expected) -> dict:
    """How far detectron2 ``Instances`` ``got`` are from ``expected`` (in the same order, as the same model
    sorts them): the counts, the least IoU of matching boxes, the largest score difference, whether the
    classes are the same and the fraction of equal mask pixels."""
    agreement = {"detections": len(got), "expected_detections": len(expected)}
    if len(got) != len(expected) or not len(got):
        return agreement
    agreement.update({
        "min_iou": pairwise_iou(got.pred_boxes, expected.pred_boxes).diagonal().min().item(),
        "max_score_diff": (got.scores - expected.scores).abs().max().item(),
        "same_classes": bool((got.pred_classes == expected.pred_classes).all()),
    })
    if expected.has("pred_masks"):
        agreement["mask_agreement"] = (got.pred_masks == expected.pred_masks).double().mean().item()
    return agreement


def _agrees(agreement: dict) -> bool:
    return (agreement["detections"] == agreement["expected_detections"] and
            (not agreement["detections"] or (agreement["min_iou"] >= MIN_IOU and agreement["same_classes"] and
                                             agreement["max_score_diff"] <= MAX_SCORE_DIFF)))


def _image(detector: Detector, photo: np.ndarray) -> torch.Tensor:
    """The model's input tensor (3, H, W) uint8 for an RGB photo already at the traced size."""
    pixels = photo if detector.input_format == "RGB" else photo[..., ::-1]
    return torch.as_tensor(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


@contextlib.contextmanager
def _traceable(model: torch.nn.Module) -> Iterator[None]:
    """PE encoders in export mode and deformable attention on its pure-PyTorch path (a trace of the compiled
    kernel would need pe_dense's op where the file is run); restored afterwards."""
    encoders = [m for m in model.modules() if isinstance(m, PEVisionTransformer)]
    attention = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    saved = [m.use_kernel for m in attention]
    for encoder in encoders:
        encoder.export_mode = True
    for layer in attention:
        layer.use_kernel = False
    try:
        yield
    finally:
        for encoder in encoders:
            encoder.export_mode = False
        for layer, use_kernel in zip(attention, saved):
            layer.use_kernel = use_kernel


def export_detector(config_file: str, weights: str, out: Path, *, size: tuple[int, int], photos: Sequence[np.ndarray],
                    overrides: Sequence[str] = ()) -> dict:
    """Trace the detector of ``config_file`` and ``weights`` at ``size`` (height, width) and write it to ``out``
    as TorchScript, once the written file, loaded back, gives PyTorch's detections on ``photos`` ((H, W, 3)
    uint8 RGB at ``size``); returns the manifest's facts. A ValueError where it does not."""
    detector = Detector(config_file, weights, overrides)
    model = detector.model
    if detector.augmentations.augs:
        raise ValueError(f"{config_file} resizes its test images ({detector.augmentations}): resize them to --size "
                         f"before the graph, and export a config without test augmentations")
    example = [{"image": _image(detector, photos[0])}]
    adapter = TracingAdapter(model, example)
    with _traceable(model), torch.no_grad():
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    agreements = []
    with atomic_output(out) as tmp:  # in place only once the file, read back, agrees
        torch.jit.save(traced, str(tmp))
        loaded = torch.jit.load(str(tmp))
        for photo in photos:
            image = _image(detector, photo)
            with torch.no_grad():
                expected = model([{"image": image}])[0]["instances"]
                got = adapter.outputs_schema(loaded(image))[0]["instances"]
            agreements.append(detection_agreement(got, expected))
            if not _agrees(agreements[-1]):
                raise ValueError(f"the exported detector disagrees with PyTorch: {agreements[-1]}")
    worst = {"detections": [a["detections"] for a in agreements],
             "min_iou": min(a.get("min_iou", 1.0) for a in agreements),
             "max_score_diff": max(a.get("max_score_diff", 0.0) for a in agreements)}
    return {
        "task": "detection",
        "format": "torchscript",
        "file": out.name,
        "dtype": "fp32",
        "input": {"shape": [3, *size], "dtype": "uint8", "channels": detector.input_format,
                  "note": "one image, pixels 0 to 255; normalisation and padding inside the graph"},
        "input_size": list(size),
        "dynamic": False,
        "outputs": "detectron2 Instances (pred_boxes in input pixels, scores, pred_classes, pred_masks at the "
                   "input size), flattened to tensors by detectron2.export.TracingAdapter",
        "check": {"runtime": f"torch.jit.load (torch {torch.__version__})", "images": len(photos),
                  "reference": "PyTorch, fp32", **worst,
                  "bounds": {"min_iou": MIN_IOU, "max_score_diff": MAX_SCORE_DIFF}},
        "torch": torch.__version__,
    }
