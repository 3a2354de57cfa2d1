"""``pe-dense segment``: indexed label PNGs with the dataset's palette, overlays with a legend, a
manifest; predictions equal the segmentor's own; bad inputs exit 2 and write nothing."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.suite("mmseg")

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/segmentation/scenes/linear_PEspatial_T_scenes.py"
ENTRY_POINT = Path(sys.executable).parent / "pe-dense"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A linear probe trained a few steps on a few scenes: (checkpoint, scenes root)."""
    from mmengine.runner import Runner

    from pe_dense.data.scenes import write_scenes_split
    from pe_dense.integrations.mmseg.training import load_config

    root = tmp_path_factory.mktemp("scenes")
    for split in ("training", "validation"):
        write_scenes_split(root, split, num_images=4)
    work = tmp_path_factory.mktemp("work")
    options = {f"{loader}.{key}": value for loader in ("train_dataloader", "val_dataloader", "test_dataloader")
               for key, value in (("dataset.data_root", str(root)), ("num_workers", 0), ("persistent_workers", False))}
    cfg = load_config(str(CONFIG), work_dir=str(work), cfg_options={
        **options, "train_cfg.max_iters": 3, "train_cfg.val_interval": 100, "default_hooks.checkpoint.interval": 3})
    Runner.from_cfg(cfg).train()
    return work / "iter_3.pth", root


def segment(*args):
    return subprocess.run([str(ENTRY_POINT), "segment", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_outputs_and_predictions(trained, tmp_path):
    from mmengine.dataset import Compose, pseudo_collate

    from pe_dense.data.scenes import CLASSES, PALETTE
    from pe_dense.integrations.mmseg.predict import Segmenter

    checkpoint, root = trained
    images = []  # PNG copies: the same pixels whichever library decodes them
    for path in sorted((root / "images/validation").iterdir())[:2]:
        images.append(tmp_path / f"{path.stem}.png")
        Image.open(path).save(images[-1])
    out = tmp_path / "out"
    result = segment(*images, "sample:coffee", "--config", CONFIG, "--weights", checkpoint, "--out", out)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "segment.json").read_text())
    assert manifest["classes"] == list(CLASSES) and manifest["palette"] == [list(c) for c in PALETTE]
    assert [e["name"] for e in manifest["images"]] == ["scene_000000", "scene_000001", "coffee"]

    segmenter = Segmenter(str(CONFIG), str(checkpoint))
    for entry, path in zip(manifest["images"], images):
        with Image.open(out / entry["labels"]) as png:
            assert png.mode == "P"
            assert np.array(png.getpalette()[:3 * len(PALETTE)]).reshape(-1, 3).tolist() == [list(c) for c in PALETTE]
            labels = np.asarray(png)
        assert labels.shape == (160, 160) and labels.max() < len(CLASSES)
        # the segmentor's own prediction through mmseg's test path (file loading, data preprocessor)
        pipeline = Compose([dict(type="LoadImageFromFile"), dict(type="PackSegInputs")])
        with torch.no_grad():
            expected = segmenter.model.test_step(pseudo_collate([pipeline(dict(img_path=str(path)))]))[0]
        np.testing.assert_array_equal(labels, expected.pred_sem_seg.data[0].numpy())
        assert sum(entry["classes"].values()) == pytest.approx(1.0, abs=1e-3)
        with Image.open(out / entry["overlay"]) as overlay:
            assert overlay.height == 160 and overlay.width > 160  # the legend is beside the picture
    with Image.open(out / "coffee.png") as png:
        coffee = np.asarray(png)
    from pe_dense.data import sample_image

    assert coffee.shape == np.asarray(sample_image("coffee")).shape[:2]


def _listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else None


def test_bad_inputs_exit_2_and_write_nothing(trained, tmp_path):
    checkpoint, root = trained
    image = sorted((root / "images/validation").iterdir())[0]
    out = tmp_path / "out"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(image.read_bytes()[:100])
    encoder_only = tmp_path / "encoder.pt"
    from pe_dense.models import build_encoder

    torch.save(build_encoder("PE-Spatial-T16-512").state_dict(), encoder_only)
    cases = {
        "missing image": (tmp_path / "nope.jpg", "--weights", checkpoint),
        "corrupt image": (image, broken, "--weights", checkpoint),
        "missing checkpoint": (image, "--weights", tmp_path / "none.pth"),
        "not a segmenter": (image, "--weights", encoder_only),
    }
    for name, args in cases.items():
        result = segment(*args, "--config", CONFIG, "--out", out)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.strip().splitlines()[-1].startswith("pe-dense segment: error:"), (name, result.stderr)
        assert _listing(out) is None, name
    result = segment(image, "--config", tmp_path / "none.py", "--weights", checkpoint, "--out", out)
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert segment(image, "--config", CONFIG, "--weights", checkpoint, "--out", out).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = segment(image, "--config", CONFIG, "--weights", checkpoint, "--out", out)
    assert again.returncode == 2 and "--force" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
