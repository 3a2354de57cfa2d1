"""Whole detectors exported through detectron2's own path (``pe-dense export --config ... --format torchscript``,
docs/export.md#detectors): Mask R-CNN and DETA (its deformable attention traced on the pure-PyTorch path), loaded
by torch.jit.load, give PyTorch's detections (the compiled kernel's, for DETA) on an image they were not traced
on; bad requests exit 2 and write nothing."""

import json
from pathlib import Path

import pytest
import torch
from conftest import randomize_

from pe_dense.cli import main

pytestmark = pytest.mark.suite("detectron2")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {"mask_rcnn": REPO / "configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py",
           "deta": REPO / "projects/DETA/configs/shapes/deta_PEspatial_T_shapes.py"}
# Two blocks (one windowed, one global), a small DETA transformer, and every Mask R-CNN box kept, so that the
# random model detects something.
SMALL = ["model.backbone.net.keep_blocks=2", "model.backbone.net.global_blocks=[1]"]
SETTINGS = {"mask_rcnn": [*SMALL, "model.roi_heads.box_predictor.test_score_thresh=0.0"],
            "deta": [*SMALL, "model.transformer.num_encoder_layers=1", "model.transformer.num_decoder_layers=2",
                     "model.transformer.num_queries=30"]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight checkpoint per detector, saved by the checkpointer as training saves it."""
    from detectron2.config import LazyConfig, instantiate

    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer

    paths = {}
    for kind, config in CONFIGS.items():
        folder = tmp_path_factory.mktemp(kind)
        torch.manual_seed(0)
        model = instantiate(LazyConfig.apply_overrides(LazyConfig.load(str(config)), SETTINGS[kind]).model)
        PEDetectionCheckpointer(randomize_(model, seed=8), str(folder)).save("detector")
        paths[kind] = folder / "detector.pth"
    return paths


def _export(kind, weights, out, *args):
    return main(["export", "--config", str(CONFIGS[kind]), "--weights", str(weights[kind]), "--format", "torchscript",
                 *[f"--set={s}" for s in SETTINGS[kind]], "--out", str(out), *args])


@pytest.mark.parametrize("kind", ["mask_rcnn", "deta"])
def test_detectors_give_pytorchs_detections(kind, weights, tmp_path, capsys):
    from detectron2.export import TracingAdapter

    from pe_dense.data.shapes import render_shapes_image
    from pe_dense.integrations.detectron2.deploy import detection_agreement
    from pe_dense.integrations.detectron2.predict import Detector

    out = tmp_path / f"{kind}.ts"
    assert _export(kind, weights, out, "--size", "256") == 0
    assert "least IoU" in capsys.readouterr().out
    manifest = json.loads((tmp_path / f"{kind}.ts.json").read_text())
    assert manifest["task"] == "detection" and manifest["input"]["shape"] == [3, 256, 256]
    assert min(manifest["check"]["detections"]) > 0 and manifest["check"]["min_iou"] >= 0.99

    detector = Detector(str(CONFIGS[kind]), str(weights[kind]), SETTINGS[kind])
    loaded = torch.jit.load(str(out))
    operators = {node.kind() for node in loaded.inlined_graph.nodes()}
    assert not [op for op in operators if op.startswith("pe_dense")]  # no compiled pe_dense op: runs without it
    image = torch.as_tensor(render_shapes_image(3, seed=4)[0].transpose(2, 0, 1).copy())  # RGB, as the configs
    adapter = TracingAdapter(detector.model, [{"image": image}])
    with torch.no_grad():
        adapter(*adapter.flattened_inputs)  # the adapter learns how to rebuild Instances from the flat outputs
        expected = detector.model([{"image": image}])[0]["instances"]
        got = adapter.outputs_schema(loaded(image))[0]["instances"]
    agreement = detection_agreement(got, expected)
    assert agreement["detections"] == agreement["expected_detections"] > 0
    assert agreement["min_iou"] >= 0.99 and agreement["max_score_diff"] <= 1e-4 and agreement["same_classes"]
    if kind == "mask_rcnn":
        assert agreement["mask_agreement"] >= 0.999 and got.pred_masks.shape[1:] == (256, 256)


def test_bad_detector_requests_exit_2_and_write_nothing(weights, tmp_path, capsys):
    out = tmp_path / "out.ts"
    for args, message in [(["--size", "256", "--dtype", "fp16"], "detectors export in fp32"),
                          (["--size", "256", "--dynamic"], "detectors export in fp32"),
                          (["--size", "256", "--layers", "0"], "apply to encoder exports")]:
        assert _export("mask_rcnn", weights, out, *args) == 2
        assert message in capsys.readouterr().err
    assert main(["export", "PE-Spatial-T16-512", "--format", "torchscript", "--size", "64", "--out", str(out)]) == 2
    assert "--format torchscript exports detectors" in capsys.readouterr().err
    assert main(["export", "--config", str(CONFIGS["mask_rcnn"]), "--weights", str(weights["mask_rcnn"]), "--size",
                 "256", "--out", str(out)]) == 2  # ONNX: the mmseg path, which says where detectors go
    assert "detectron2 detectors with --format torchscript" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
