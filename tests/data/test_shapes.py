"""The built-in COCO-format shapes dataset: deterministic, and valid COCO that pycocotools reads."""

import json

import numpy as np
import pytest
from PIL import Image

from pe_dense.data.shapes import CLASSES, encode_rle, ensure_shapes_split, render_shapes_image, write_shapes_split


def test_rendering_is_deterministic_per_image():
    a, instances_a = render_shapes_image(3, seed=0)
    b, instances_b = render_shapes_image(3, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(instances_a) == len(instances_b) >= 1
    for x, y in zip(instances_a, instances_b):
        np.testing.assert_array_equal(x["mask"], y["mask"])
    assert not np.array_equal(a, render_shapes_image(4, seed=0)[0])
    assert not np.array_equal(a, render_shapes_image(3, seed=1)[0])


def test_visible_masks_do_not_overlap():
    for index in range(10):
        _, instances = render_shapes_image(index, seed=2)
        coverage = sum(i["mask"].astype(int) for i in instances)
        assert coverage.max() <= 1


@pytest.mark.parametrize("mask", [
    np.zeros((5, 4), bool), np.ones((5, 4), bool), np.eye(6, dtype=bool),
    np.random.default_rng(0).random((17, 9)) > 0.5,
], ids=["empty", "full", "starts-with-one", "random"])
def test_rle_is_what_pycocotools_decodes(mask):
    from pycocotools import mask as mask_utils

    rle = encode_rle(mask)
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"]))
    np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_split_is_valid_coco(tmp_path):
    from pycocotools.coco import COCO

    path = write_shapes_split(tmp_path, "mini", num_images=12, seed=5, size=128)
    assert path == tmp_path / "annotations" / "instances_mini.json"
    coco = COCO(str(path))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.imgs) == 12
    kinds, used = set(), set()
    for image_id, info in coco.imgs.items():
        image = Image.open(tmp_path / "mini" / info["file_name"])
        assert image.size == (128, 128) and image.mode == "RGB"
        _, instances = render_shapes_image(image_id - 1, seed=5, size=128)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(annotations) == len(instances)
        for annotation, instance in zip(annotations, instances):
            mask = coco.annToMask(annotation).astype(bool)
            x, y, w, h = annotation["bbox"]
            rows, cols = np.nonzero(mask)
            assert cols.min() >= np.floor(x) and cols.max() < np.ceil(x + w)  # every mask inside its box
            assert rows.min() >= np.floor(y) and rows.max() < np.ceil(y + h)
            kinds.add("polygon" if isinstance(annotation["segmentation"], list) else "rle")
            np.testing.assert_array_equal(mask, instance["mask"])  # exactly the visible pixels
            assert annotation["area"] == instance["mask"].sum() and annotation["iscrowd"] == 0
            used.add(annotation["category_id"])
    assert kinds == {"polygon", "rle"} and used == {1, 2, 3, 4}


def test_existing_split_is_reused_and_regenerated_when_settings_change(tmp_path):
    path = ensure_shapes_split(tmp_path, "tiny", num_images=2, seed=1, size=64)
    stamp = path.stat().st_mtime_ns
    assert ensure_shapes_split(tmp_path, "tiny", num_images=2, seed=1, size=64).stat().st_mtime_ns == stamp
    ensure_shapes_split(tmp_path, "tiny", num_images=3, seed=1, size=64)
    assert len(json.loads(path.read_text())["images"]) == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown split 'test'"):
        write_shapes_split("/nonexistent", "test")
    with pytest.raises(ValueError, match="num_images must be positive"):
        write_shapes_split("/nonexistent", "val", num_images=0)
