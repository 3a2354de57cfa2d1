"""A whole Mask R-CNN exported through detectron2's own path (``pe-dense export --config ... --format
torchscript``, docs/export.md#detectors): the file, loaded by torch.jit.load, gives PyTorch's detections on
photographs it was not traced on; bad requests exit 2 and write nothing."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_

from pe_dense.cli import main

pytestmark = pytest.mark.suite("detectron2")

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py"
# Two blocks (one windowed, one global) and every box kept, so that the random model detects something.
SETTINGS = ["model.backbone.net.keep_blocks=2", "model.backbone.net.global_blocks=[1]",
            "model.roi_heads.box_predictor.test_score_thresh=0.0"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from detectron2.config import LazyConfig, instantiate

    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer

    folder = tmp_path_factory.mktemp("detector")
    torch.manual_seed(0)
    model = instantiate(LazyConfig.apply_overrides(LazyConfig.load(str(CONFIG)), SETTINGS).model)
    PEDetectionCheckpointer(randomize_(model, seed=8), str(folder)).save("detector")
    return folder / "detector.pth"


def _export(weights, out, *args):
    return main(["export", "--config", str(CONFIG), "--weights", str(weights), "--format", "torchscript",
                 *[f"--set={s}" for s in SETTINGS], "--out", str(out), *args])


def test_mask_rcnn_gives_pytorchs_detections(weights, tmp_path, capsys):
    from detectron2.export import TracingAdapter

    from pe_dense.data.shapes import render_shapes_image
    from pe_dense.integrations.detectron2.deploy import detection_agreement
    from pe_dense.integrations.detectron2.predict import Detector

    out = tmp_path / "mask_rcnn.ts"
    assert _export(weights, out, "--size", "256") == 0
    assert "least IoU" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "mask_rcnn.ts.json").read_text())
    assert manifest["task"] == "detection" and manifest["input"]["shape"] == [3, 256, 256]
    assert min(manifest["check"]["detections"]) > 0 and manifest["check"]["min_iou"] >= 0.99

    detector = Detector(str(CONFIG), str(weights), SETTINGS)
    loaded = torch.jit.load(str(out))
    image = torch.as_tensor(render_shapes_image(3, seed=4)[0].transpose(2, 0, 1).copy())  # RGB, as the config
    adapter = TracingAdapter(detector.model, [{"image": image}])
    with torch.no_grad():
        adapter(*adapter.flattened_inputs)  # the adapter learns how to rebuild Instances from the flat outputs
        schema = adapter.outputs_schema
        expected = detector.model([{"image": image}])[0]["instances"]
        got = schema(loaded(image))[0]["instances"]
    agreement = detection_agreement(got, expected)
    assert agreement["detections"] == agreement["expected_detections"] > 0
    assert agreement["min_iou"] >= 0.99 and agreement["max_score_diff"] <= 1e-4 and agreement["same_classes"]
    assert agreement["mask_agreement"] >= 0.999
    assert np.array_equal(got.pred_masks.shape[1:], (256, 256))


def test_bad_detector_requests_exit_2_and_write_nothing(weights, tmp_path, capsys):
    out = tmp_path / "out.ts"
    for args, message in [(["--size", "256", "--dtype", "fp16"], "detectors export in fp32"),
                          (["--size", "256", "--dynamic"], "detectors export in fp32"),
                          (["--size", "256", "--layers", "0"], "apply to encoder exports")]:
        assert _export(weights, out, *args) == 2
        assert message in capsys.readouterr().err
    assert main(["export", "PE-Spatial-T16-512", "--format", "torchscript", "--size", "64", "--out", str(out)]) == 2
    assert "--format torchscript exports detectors" in capsys.readouterr().err
    assert main(["export", "--config", str(CONFIG), "--weights", str(weights), "--size", "256", "--out",
                 str(out)]) == 2  # ONNX: the mmseg path, which says where detectors go
    assert "detectron2 detectors with --format torchscript" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
