"""Whole mmseg models exported (``pe-dense export --config``, docs/export.md#whole-models): run in onnxruntime,
they give what mmseg's own test path gives (pipeline, data preprocessor, inference, post-processing) for
segmenters (linear, UperNet) and depth estimators (linear bins, DPT); fp16 within its stated bound; bad requests
exit 2 and write nothing."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pe_dense.cli import main

pytestmark = [pytest.mark.suite("mmseg"), pytest.mark.suite("export")]

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "linear": "configs/segmentation/scenes/linear_PEspatial_T_scenes.py",
    "upernet": "configs/segmentation/scenes/upernet_PEspatial_T_scenes.py",
    "linear-depth": "configs/depth/scenes/linear_PEspatial_T_scenes.py",
    "dpt": "configs/depth/scenes/dpt_PEspatial_T_scenes.py",
}
# One block of the encoder: the export's time grows with the blocks, and one shows the graph as well as twelve.
ONE_BLOCK = {"model.backbone.keep_blocks": 1}
FOUR_MAPS = {**ONE_BLOCK, "model.backbone.out_indices": (0, 0, 0, 0)}
OVERRIDES = {"linear": ONE_BLOCK, "upernet": FOUR_MAPS, "linear-depth": ONE_BLOCK, "dpt": FOUR_MAPS}


def _sets(kind):
    return [arg for key, value in OVERRIDES[kind].items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A random-weight checkpoint per config (one-block encoder), as mmseg training saves its state dict."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import pe_dense.integrations.mmseg  # noqa: F401  (registers the PE modules)

    folder = tmp_path_factory.mktemp("whole_models")
    init_default_scope("mmseg")
    paths = {}
    for kind, config in CONFIGS.items():
        cfg = Config.fromfile(str(REPO / config))
        cfg.merge_from_dict(OVERRIDES[kind])
        with warnings.catch_warnings():  # random weights, announced
            warnings.simplefilter("ignore")
            model = MODELS.build(cfg.model)
        if kind == "dpt":  # random convolutions stacked give large sigmoid scores, whose float32 rounding
            with torch.no_grad():  # reaches 1e-4 of the depth; a trained head's scores are smaller
                model.decode_head.conv_depth[-1].weight.mul_(0.1)
        paths[kind] = folder / f"{kind}.pth"
        torch.save({"state_dict": model.state_dict()}, paths[kind])
    return paths


def _export(kind, checkpoints, out, *args):
    return main(["export", "--config", str(REPO / CONFIGS[kind]), "--weights", str(checkpoints[kind]), *_sets(kind),
                 "--out", str(out), *args])


def _photos(size):
    """Two (H, W, 3) uint8 RGB pictures unlike the export check's photograph."""
    from pe_dense.data import sample_image

    pictures = [sample_image(name) for name in ("astronaut", "chelsea")]
    return [np.asarray(picture.resize((size[1], size[0]), Image.BILINEAR)) for picture in pictures]


def _onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda photos: session.run(None, {"images": np.stack(photos).transpose(0, 3, 1, 2).astype(np.float32)})


def _mmseg(kind, checkpoints):
    from pe_dense.integrations.mmseg.predict import DepthPredictor, Segmenter

    predictor = DepthPredictor if "depth" in kind or kind == "dpt" else Segmenter
    return predictor(str(REPO / CONFIGS[kind]), str(checkpoints[kind]), OVERRIDES[kind])


@pytest.mark.parametrize("kind", ["linear", "upernet"])
def test_segmenters_give_mmseg_classes(kind, checkpoints, tmp_path, capsys):
    out = tmp_path / f"{kind}.onnx"
    assert _export(kind, checkpoints, out, "--size", "120x160") == 0  # 120: padded to 128 inside the graph
    assert "class agreement 1" in capsys.readouterr().out
    manifest = json.loads((tmp_path / f"{kind}.onnx.json").read_text())
    assert manifest["task"] == "segmentation" and manifest["dtype"] == "fp32" and not manifest["dynamic"]
    assert manifest["normalisation"]["mean"] == [127.5] * 3 and manifest["padding"]["size_divisor"] == 16
    assert manifest["resize"] is None and [o["name"] for o in manifest["outputs"]] == ["classes", "logits"]
    assert manifest["check"]["class_agreement"] >= 0.999 and manifest["check"]["min_class_agreement"] == 0.999

    photos = _photos((120, 160))
    classes, logits = _onnx(out)(photos)  # a batch of 2: the batch size is free
    segmenter = _mmseg(kind, checkpoints)
    assert classes.shape == (2, 120, 160) and logits.shape == (2, 9, 120, 160)
    for got, photo in zip(classes, photos):
        expected = segmenter(photo)
        assert len(np.unique(expected)) > 1  # not a constant map, so agreement means something
        assert (got == expected).mean() >= 0.999


@pytest.mark.parametrize("kind, size, dynamic", [("linear-depth", (128, 160), True), ("dpt", (120, 160), False)])
def test_depth_estimators_give_mmseg_depth(kind, size, dynamic, checkpoints, tmp_path):
    out = tmp_path / f"{kind}.onnx"
    assert _export(kind, checkpoints, out, "--size", "x".join(map(str, size)), *["--dynamic"] * dynamic) == 0
    manifest = json.loads((tmp_path / f"{kind}.onnx.json").read_text())
    assert manifest["task"] == "depth" and manifest["dynamic"] == dynamic
    assert manifest["check"]["depth_max_relative_error"] <= 1e-4
    predictor = _mmseg(kind, checkpoints)
    for at in [size] + [(96, 192)] * dynamic:  # a dynamic graph at another multiple of 16
        photos = _photos(at)
        (depth,) = _onnx(out)(photos)
        assert depth.shape == (2, 1, *at)
        for got, photo in zip(depth, photos):
            expected = predictor(photo)
            assert expected.std() > 1e-3 * expected.mean()  # not a constant map
            assert (np.abs(got[0] - expected) / expected).max() <= 1e-4


def test_fp16_depth_stays_within_its_bound(checkpoints, tmp_path, capsys):
    out = tmp_path / "depth16.onnx"
    assert _export("linear-depth", checkpoints, out, "--size", "120x160", "--dtype", "fp16") == 0
    assert "(depth, fp16)" in capsys.readouterr().out
    import onnx

    model = onnx.load(out)
    stored = {kind: sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == kind)
              for kind in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT)}
    assert stored[onnx.TensorProto.FLOAT16] > 10 * stored[onnx.TensorProto.FLOAT]  # fp16 weights (fp32 RoPE angles)
    check = json.loads((tmp_path / "depth16.onnx.json").read_text())["check"]
    assert check["max_depth_relative_error"] == 1e-2 and 0 < check["depth_max_relative_error"] <= 1e-2
    photos = _photos((120, 160))
    (depth,) = _onnx(out)(photos)
    expected = _mmseg("linear-depth", checkpoints)(photos[0])
    assert (np.abs(depth[0, 0] - expected) / expected).max() <= 1e-2


def _refused(capsys, tmp_path, argv, message):
    assert main(["export", *map(str, argv)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0], error


def test_bad_requests_exit_2_and_write_nothing(checkpoints, tmp_path, capsys):
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    linear = ["--config", REPO / CONFIGS["linear"], "--weights", checkpoints["linear"], *_sets("linear"),
              "--size", "64", "--out", out]
    _refused(capsys, tmp_path, [*linear, "--dtype", "bf16"], "cannot run bf16 convolutions on this CPU")
    _refused(capsys, tmp_path, ["--config", REPO / "configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py",
                                "--weights", checkpoints["linear"], "--size", "64", "--out", out],
             "whole-model export takes mmseg segmenters")
    _refused(capsys, tmp_path, ["--config", REPO / CONFIGS["linear"], "--weights", checkpoints["dpt"],
                                *_sets("linear"), "--size", "64", "--out", out], "is not a trained model of")
    _refused(capsys, tmp_path, [*linear, "--set", "model.test_cfg.mode=slide"], "slide inference cannot be exported")
    _refused(capsys, tmp_path, [*linear, "--layers", "0"], "apply to encoder exports")
    _refused(capsys, tmp_path, ["PE-Spatial-T16-512", *linear], "not both")
    assert list(out.parent.iterdir()) == []
    out.write_bytes(b"an earlier export")
    _refused(capsys, tmp_path, linear, "exists; pass --force")
    assert out.read_bytes() == b"an earlier export" and [p.name for p in out.parent.iterdir()] == ["model.onnx"]
