"""Depth training and use: tools/train_seg.py trains, tests and resumes depth configs exactly, refuses bad
data, the tiny DPT reaches its targets on the built-in scenes, and `pe-dense depth` writes its files."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEPTH_SCENES_IMAGES, cfg_options, mmseg_data_options
from fitting import assert_loss_falls, check_frozen_linear_probe, fit_mmseg_batch
from PIL import Image

pytestmark = pytest.mark.suite("mmseg")

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools/train_seg.py"
LINEAR_SCENES = REPO / "configs/depth/scenes/linear_PEspatial_T_scenes.py"
DPT_SCENES = REPO / "configs/depth/scenes/dpt_PEspatial_T_scenes.py"
LINEAR_NYU = REPO / "configs/depth/nyu/linear_PEspatial_T_nyu.py"
SEGMENTATION = REPO / "configs/segmentation/scenes/linear_PEspatial_T_scenes.py"
SMALL_DPT = {"model.backbone.keep_blocks": 2, "model.backbone.out_indices": (0, 1, 1, 1)}


def small_scenes(root, **extra) -> dict:
    return {**mmseg_data_options(root, DEPTH_SCENES_IMAGES), **extra}


def _train_in_process(config, work_dir, options):
    from mmengine.runner import Runner

    from pe_dense.integrations.mmseg.training import load_config

    runner = Runner.from_cfg(load_config(str(config), work_dir=str(work_dir), cfg_options=options))
    runner.train()
    return runner


def test_frozen_linear_probe_learns_and_leaves_the_encoder_bit_identical(depth_scenes_root, tmp_path):
    check_frozen_linear_probe(LINEAR_SCENES, tmp_path, {
        **small_scenes(depth_scenes_root), "train_cfg.max_iters": 6, "train_cfg.val_interval": 100,
        "default_hooks.checkpoint.interval": 6, "train_dataloader.batch_size": 4},
        "conv_depth.weight", "linear depth probe on one batch")


def test_dpt_trains_every_parameter_and_fits_a_batch(depth_scenes_root, tmp_path):
    """The fast stand-in of the 600-iteration demo (slow tier): the demo's model, optimizer and data."""
    from pe_dense.integrations.mmseg.training import load_config

    cfg = load_config(str(DPT_SCENES), work_dir=str(tmp_path), cfg_options=small_scenes(
        depth_scenes_root, **{"train_dataloader.batch_size": 4}))
    losses, silent = fit_mmseg_batch(cfg, steps=20)
    assert not silent  # the encoder (not frozen here) and the DPT decoder
    assert_loss_falls(losses, "DPT on one batch")


def run(*args):
    """A command as its own process, the way it is run."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
def test_tiny_dpt_from_random_weights_reaches_d1_080_and_half_the_mean_depth_rmse(tmp_path):
    from pe_dense.data.depth_scenes import mean_depth_baseline
    from pe_dense.data.generated import datasets_root

    result = run(TOOL, "--config", DPT_SCENES, "--work-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    baseline = mean_depth_baseline(datasets_root() / "pe_depth_scenes")  # the training set's mean depth everywhere
    print(f"tiny DPT: d1 {metrics['d1']:.3f}, RMSE {metrics['rmse']:.3f} m, abs_rel {metrics['abs_rel']:.3f}; "
          f"mean depth ({baseline['mean_depth']:.2f} m) everywhere: d1 {baseline['d1']:.3f}, "
          f"RMSE {baseline['rmse']:.3f} m")
    assert "evaluation: d1" in result.stdout
    assert metrics["d1"] >= 0.80 and metrics["rmse"] <= baseline["rmse"] / 2


def _final_state(path):
    from pe_dense.integrations.mmseg.checkpoint import load_from_local_safely

    checkpoint = load_from_local_safely(str(path))
    return checkpoint["meta"]["iter"], checkpoint["state_dict"], checkpoint["optimizer"]


def test_resumed_training_continues_exactly(depth_scenes_root, tmp_path, train_seg, capsys):
    # Deterministic data (no random flips or colour changes, a seeded shuffle), so that the straight run
    # and the interrupted-and-resumed one see the same batches.
    config = tmp_path / "deterministic.py"
    config.write_text(f"""_base_ = ["{DPT_SCENES}"]
randomness = dict(seed=3)
model = dict(backbone=dict(keep_blocks=2, out_indices=(0, 1, 1, 1)))
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=[
    dict(type="LoadCheckedImage"), dict(type="LoadCheckedDepth", depth_rescale_factor=1e-3, max_depth=10.0),
    dict(type="PackSegInputs")]))
""")
    common = ["--config", str(config), "--cfg-options", *cfg_options(small_scenes(depth_scenes_root)),
              "train_cfg.val_interval=100", "default_hooks.checkpoint.interval=2"]
    assert train_seg([*common, "train_cfg.max_iters=4", "--work-dir", str(tmp_path / "straight")]) == 0
    assert train_seg([*common, "train_cfg.max_iters=2", "--work-dir", str(tmp_path / "resumed")]) == 0
    assert train_seg([*common, "train_cfg.max_iters=4", "--work-dir", str(tmp_path / "resumed"), "--resume"]) == 0
    assert "resumed epoch: 0, iter: 2" in sorted((tmp_path / "resumed").glob("*/*.log"))[-1].read_text()
    iters_a, weights_a, optimizer_a = _final_state(tmp_path / "straight/iter_4.pth")
    iters_b, weights_b, optimizer_b = _final_state(tmp_path / "resumed/iter_4.pth")
    assert iters_a == iters_b == 4
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], rtol=0, atol=1e-6, msg=key)
    assert {int(s["step"]) for s in optimizer_b["state"].values()} == {4}


def test_bad_depth_map_stops_training_naming_the_file(tmp_path, train_seg, capsys):
    from pe_dense.data.depth_scenes import write_depth_split

    root = tmp_path / "nyu"
    write_depth_split(root, "train", num_images=2, size=(48, 64))
    write_depth_split(root, "test", num_images=1, size=(48, 64))
    bad = root / "annotations/train/scene_000001.png"
    Image.fromarray(np.full((48, 64), 40, np.uint8)).save(bad)  # an 8-bit PNG
    assert train_seg([
        "--config", str(LINEAR_NYU), "--work-dir", str(tmp_path / "work"), "--cfg-options",
        *cfg_options(mmseg_data_options(root)), "model.backbone.weights=None", "model.backbone.keep_blocks=1",
        "model.backbone.out_indices=(0,0,0,0)", "train_dataloader.batch_size=2", "train_cfg.max_iters=2",
        "train_cfg.val_interval=100", "train_dataloader.dataset.pipeline.4.crop_size=(32,32)"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("train_seg: error:") and str(bad) in last and "8-bit" in last, last
    assert not list((tmp_path / "work").glob("*.pth"))


def test_missing_nyu_folder_is_refused_before_any_output(tmp_path, train_seg, capsys):
    assert train_seg(["--config", str(LINEAR_NYU), "--work-dir", str(tmp_path / "work"), "--cfg-options",
                      *cfg_options(mmseg_data_options(tmp_path / "nowhere")), "model.backbone.weights=None"]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'}/images/train" in error and "data_root" in error
    assert not (tmp_path / "work").exists()


@pytest.fixture(scope="module")
def trained(depth_scenes_root, tmp_path_factory):
    """A tiny DPT trained for a few iterations: its checkpoint."""
    work = tmp_path_factory.mktemp("dpt")
    _train_in_process(DPT_SCENES, work, small_scenes(depth_scenes_root, **SMALL_DPT, **{
        "train_cfg.max_iters": 4, "train_cfg.val_interval": 100, "default_hooks.checkpoint.interval": 4}))
    return work / "iter_4.pth"


def test_test_mode_writes_every_depth_metric(trained, depth_scenes_root, tmp_path, train_seg, capsys):
    assert train_seg(["--config", str(DPT_SCENES), "--test", str(trained), "--work-dir", str(tmp_path),
                      "--cfg-options", *cfg_options(small_scenes(depth_scenes_root, **SMALL_DPT))]) == 0
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    assert {"d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"} <= metrics.keys()
    assert "evaluation: d1" in capsys.readouterr().out


def depth_cli(*args):
    from pe_dense.cli import main

    return main(["depth", *map(str, args)])


def read_ply(path: Path) -> tuple[dict, np.ndarray]:
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(next(line for line in lines if line.startswith("element vertex")).split()[-1])
    names = [line.split()[-1] for line in lines if line.startswith("property")]
    dtype = [(n, "<f4") for n in names[:6]] + [(n, "u1") for n in names[6:]]
    assert len(body) == count * struct.calcsize("<6f3B")
    return {"count": count, "names": names}, np.frombuffer(body, dtype=dtype)


def test_depth_command_writes_png_npy_picture_point_cloud_and_manifest(trained, depth_scenes_root, tmp_path):
    image = depth_scenes_root / "images/test/scene_000000.jpg"
    out = tmp_path / "out"
    assert depth_cli(image, "sample:astronaut", "--config", DPT_SCENES, "--weights", trained, "--out", out, "--ply",
                     "--set", "model.backbone.keep_blocks=2", "--set", "model.backbone.out_indices=(0,1,1,1)") == 0
    manifest = json.loads((out / "depth.json").read_text())
    assert [e["name"] for e in manifest["images"]] == ["scene_000000", "astronaut"]
    assert manifest["depth_png_scale"] == 1000 and manifest["depth_range_m"] == [1e-3, 10.0]
    entry = manifest["images"][0]
    depth = np.load(out / entry["depth_npy"])
    assert depth.shape == (120, 160) and depth.dtype == np.float32 and 1e-3 <= depth.min() <= depth.max() <= 10
    png = np.asarray(Image.open(out / entry["depth_png"]))
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, np.round(depth * 1000).astype(np.uint16))
    assert entry["depth_m"]["min"] == pytest.approx(depth.min(), abs=1e-4)
    with Image.open(out / entry["picture"]) as picture:
        assert picture.height == 120 and picture.width > 2 * 160  # image, depth and colour bar
    header, vertices = read_ply(out / entry["ply"])
    assert header["count"] == depth.size and header["names"][:3] == ["x", "y", "z"]
    focal = entry["focal_length_px"]
    assert focal == pytest.approx(518.857901 * 160 / 640, abs=1e-3)
    np.testing.assert_allclose(vertices["z"], depth.ravel(), rtol=1e-6)
    u = np.tile(np.arange(160), 120)
    np.testing.assert_allclose(vertices["x"], (u - 79.5) / focal * depth.ravel(), rtol=1e-4, atol=1e-5)
    normals = np.stack([vertices["nx"], vertices["ny"], vertices["nz"]], 1)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-4)
    points = np.stack([vertices["x"], vertices["y"], vertices["z"]], 1)
    assert ((normals * points).sum(1) <= 1e-6).all()  # facing the camera
    colours = np.stack([vertices["red"], vertices["green"], vertices["blue"]], 1)
    np.testing.assert_array_equal(colours, np.asarray(Image.open(image).convert("RGB")).reshape(-1, 3))


def test_depth_command_bad_inputs_exit_2_and_write_nothing(trained, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--config", DPT_SCENES, "--weights", trained, "--out", out, "--set", "model.backbone.keep_blocks=2",
              "--set", "model.backbone.out_indices=(0,1,1,1)"]
    bad_image = tmp_path / "bad.jpg"
    bad_image.write_bytes(b"not a jpeg")
    cases = {
        "cannot": (bad_image, *common),
        "does not exist": (tmp_path / "missing.png", *common),
        "--ply": ("sample:astronaut", *common, "--focal", "500"),
        "positive": ("sample:astronaut", *common, "--ply", "--focal", "-3"),
        "not a depth estimator": ("sample:astronaut", "--config", SEGMENTATION, "--weights", trained, "--out", out),
    }
    for expected, args in cases.items():
        assert depth_cli(*args) == 2, expected
        error = capsys.readouterr().err
        assert expected in error, (expected, error[-2000:])
    assert not out.exists() or not any(out.iterdir())
    assert depth_cli("sample:astronaut", *common) == 0
    assert depth_cli("sample:astronaut", *common) == 2 and "--force" in capsys.readouterr().err
