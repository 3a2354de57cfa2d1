"""The built-in segmentation scenes: deterministic, in the ADE20k layout, labels that match the pixels."""

import json

import numpy as np
import pytest
from PIL import Image

from pe_dense.data.scenes import CLASSES, MANIFEST, STUFF, THINGS, ensure_scenes, render_scene, write_scenes_split


def test_rendering_is_deterministic_per_image():
    a, labels_a = render_scene(3, seed=0)
    b, labels_b = render_scene(3, seed=0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(a, render_scene(4, seed=0)[0])
    assert not np.array_equal(a, render_scene(3, seed=1)[0])


def test_every_class_appears_and_labels_follow_ade_convention():
    counts = np.zeros(len(CLASSES) + 1, int)
    for index in range(40):
        image, labels = render_scene(index, seed=0, size=96)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert labels.shape == (96, 96) and labels.dtype == np.uint8
        counts += np.bincount(labels.ravel(), minlength=len(CLASSES) + 1)
    assert counts.size == len(CLASSES) + 1  # nothing above the last class id
    assert (counts[1:] > 0).all(), dict(zip(CLASSES, counts[1:]))
    assert 0 < counts[0] < 0.05 * counts.sum()  # a little "other" (0), ignored by training


def test_things_are_their_label_and_stuff_is_behind():
    image, labels = render_scene(7, seed=0)
    for k, name in enumerate(THINGS, start=len(STUFF) + 1):
        region = labels == k
        if region.sum() > 200:  # vivid and uniform inside a thing, unlike any stuff texture
            saturation = image[region].max(1).astype(int) - image[region].min(1)
            assert np.median(saturation) > 60, name
    rows_with_sky = np.flatnonzero((labels == CLASSES.index("sky") + 1).any(1))
    rows_with_ground = np.flatnonzero(np.isin(labels, [CLASSES.index(c) + 1 for c in ("floor", "grass", "water")])
                                      .any(1))
    if rows_with_sky.size and rows_with_ground.size:
        assert rows_with_sky.min() < rows_with_ground.min()


def test_split_on_disk_is_ade_layout(tmp_path):
    root = write_scenes_split(tmp_path / "scenes", "validation", num_images=3)
    images = sorted((root / "images" / "validation").iterdir())
    labels = sorted((root / "annotations" / "validation").iterdir())
    assert [p.name for p in images] == [f"scene_00000{i}.jpg" for i in range(3)]
    assert [p.stem for p in labels] == [p.stem for p in images] and all(p.suffix == ".png" for p in labels)
    _, expected = render_scene(1, seed=1)
    with Image.open(labels[1]) as png:
        assert png.mode == "L"
        np.testing.assert_array_equal(np.asarray(png), expected)  # lossless labels
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["classes"] == list(CLASSES) and len(manifest["palette"]) == len(CLASSES)
    assert manifest["splits"]["validation"] == {"num_images": 3, "seed": 1, "size": 160}


def test_ensure_regenerates_only_when_settings_change(tmp_path):
    root = ensure_scenes(tmp_path, splits=("validation",), num_images=2, size=64)
    first = root / "images" / "validation" / "scene_000000.jpg"
    stamp = first.stat().st_mtime_ns
    ensure_scenes(tmp_path, splits=("validation",), num_images=2, size=64)
    assert first.stat().st_mtime_ns == stamp
    ensure_scenes(tmp_path, splits=("validation",), num_images=1, size=64)  # the first image of the split
    assert first.stat().st_mtime_ns == stamp
    ensure_scenes(tmp_path, splits=("validation",), num_images=3, size=64)  # more images: generated again
    assert len(list((root / "images" / "validation").iterdir())) == 3
    ensure_scenes(tmp_path, splits=("validation",), num_images=2, size=96)
    with Image.open(first) as image:
        assert image.size == (96, 96)
    assert json.loads((root / MANIFEST).read_text())["splits"]["validation"]["num_images"] == 2
    assert len(list((root / "images" / "validation").iterdir())) == 2  # the third image is not kept


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown split"):
        write_scenes_split("unused", "test")
    with pytest.raises(ValueError, match="positive"):
        write_scenes_split("unused", "training", num_images=0)
