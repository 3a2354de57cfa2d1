"""``pe-dense segment``: indexed label PNGs with the dataset's palette, overlays with a legend, a
manifest; predictions equal the segmentor's own; bad inputs exit 2 and write nothing."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pe_dense.cli import main

pytestmark = pytest.mark.suite("mmseg")

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/segmentation/scenes/linear_PEspatial_T_scenes.py"


def segment(*args) -> int:
    return main(["segment", *map(str, args)])


def test_outputs_and_predictions(trained_segmenter, scenes_root, tmp_path):
    from mmengine.dataset import Compose, pseudo_collate

    from pe_dense.data.scenes import CLASSES, PALETTE
    from pe_dense.integrations.mmseg.predict import Segmenter

    checkpoint, root = trained_segmenter, scenes_root
    images = []  # PNG copies: the same pixels whichever library decodes them
    for path in sorted((root / "images/validation").iterdir())[:2]:
        images.append(tmp_path / f"{path.stem}.png")
        Image.open(path).save(images[-1])
    out = tmp_path / "out"
    assert segment(*images, "sample:coffee", "--config", CONFIG, "--weights", checkpoint, "--out", out) == 0
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


def test_bad_inputs_exit_2_and_write_nothing(trained_segmenter, scenes_root, tmp_path, capsys):
    checkpoint = trained_segmenter
    image = sorted((scenes_root / "images/validation").iterdir())[0]
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
        assert segment(*args, "--config", CONFIG, "--out", out) == 2, name
        error = capsys.readouterr().err
        assert error.strip().splitlines()[-1].startswith("pe-dense segment: error:"), (name, error)
        assert _listing(out) is None, name
    assert segment(image, "--config", tmp_path / "none.py", "--weights", checkpoint, "--out", out) == 2
    assert "does not exist" in capsys.readouterr().err
    assert segment(image, "--config", CONFIG, "--weights", checkpoint, "--out", out) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert segment(image, "--config", CONFIG, "--weights", checkpoint, "--out", out) == 2
    assert "--force" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
