"""The checks of one's own datasets (pe_dense.data.custom): COCO-format detection files (the summary, an error
naming the file or entry for each kind of bad input, warnings for what trains but deserves a look) and the
dataset.json of segmentation and depth folders (their files are checked in
tests/integrations/test_mmseg_custom_data.py, through the command that trains on them)."""

import json
from pathlib import Path

import pytest
from conftest import write_coco

from pe_dense.data.custom import DatasetError, check_coco


def _edit(path: Path, change) -> Path:
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))
    return path


def test_a_sound_json_is_summarised_in_category_id_order(tmp_path):
    data = check_coco(write_coco(tmp_path), tmp_path / "pics")
    assert data.ids == [3, 7] and data.classes == ["gadget", "widget"] and data.has_masks
    assert data.summary.counts == {"gadget": 3, "widget": 3} and data.summary.splits == {"train": 3}
    assert data.summary.sizes == {(64, 48): 3} and not data.summary.warnings
    lines = data.summary.lines()
    assert "train 3 images" in lines[0] and "64x48 (3)" in lines[1] and "gadget 3, widget 3" in lines[2]


def missing_image(coco):
    coco["images"][1]["file_name"] = "gone.jpg"
    return "gone.jpg"


def size_other_than_the_file(coco):
    coco["images"][1]["width"] = 640
    return "the json says 640x48 but"


def unknown_image_id(coco):
    coco["annotations"][0]["image_id"] = 999
    return "annotation 1 points at unknown image id 999"


def unknown_category_id(coco):
    coco["annotations"][1]["category_id"] = 5
    return "annotation 2 points at unknown category id 5"


def box_outside_the_image(coco):
    coco["annotations"][2]["bbox"] = [40, 10, 30, 10]  # to x = 70 in a 64 wide image
    return "annotation 3: bbox [40, 10, 30, 10] lies outside its 64x48 image"


def box_of_zero_area(coco):
    coco["annotations"][0]["bbox"] = [4, 5, 0, 10]
    return "annotation 1: bbox [4, 5, 0, 10] has zero area"


def polygon_of_two_points(coco):
    coco["annotations"][3]["segmentation"] = [[1, 1, 5, 5]]
    return "annotation 4: a polygon has 2 point(s)"


def duplicate_file_name(coco):
    coco["images"][2]["file_name"] = coco["images"][0]["file_name"]
    return "duplicate file name shot_0.jpg (images 100 and 102)"


def no_images(coco):
    coco["images"], coco["annotations"] = [], []
    return "split 'train' has no images"


@pytest.mark.parametrize("damage", [missing_image, size_other_than_the_file, unknown_image_id, unknown_category_id,
                                    box_outside_the_image, box_of_zero_area, polygon_of_two_points,
                                    duplicate_file_name, no_images],
                         ids=lambda f: f.__name__)
def test_each_bad_entry_is_named(damage, tmp_path):
    path = write_coco(tmp_path)
    named = []
    _edit(path, lambda coco: named.append(damage(coco)))
    with pytest.raises(DatasetError) as error:
        check_coco(path, tmp_path / "pics")
    message = str(error.value)
    assert str(path) in message and named[0] in message and "\n" not in message, message


def test_a_file_that_is_not_coco_is_refused(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps([{"box": [1, 2, 3, 4]}]))
    with pytest.raises(DatasetError, match="not a json object"):
        check_coco(path, tmp_path)
    path.write_text("{broken")
    with pytest.raises(DatasetError, match="not readable json"):
        check_coco(path, tmp_path)


def test_crowd_only_images_empty_classes_and_elongated_images_are_warnings(tmp_path):
    path = write_coco(tmp_path, categories=((1, "a"), (2, "b"), (9, "never")), size=(20, 120), masks=False)

    def crowd_only_first_image(coco):
        coco["categories"].append(coco["categories"].pop(2))  # the third category has no annotation
        coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != 9]
        for annotation in coco["annotations"]:
            annotation["iscrowd"] = int(annotation["image_id"] == 100)

    data = check_coco(_edit(path, crowd_only_first_image), tmp_path / "pics")
    warnings = "\n".join(data.summary.warnings)
    assert "1 image(s) have only crowd annotations" in warnings and "shot_0.jpg" in warnings
    assert "1 class(es) have no instances: never" in warnings
    assert "3 image(s) more elongated than 5:1" in warnings
    assert not data.has_masks and data.classes == ["a", "b", "never"]


SEGMENTATION = {"task": "segmentation", "classes": ["a", "b"]}


@pytest.mark.parametrize("declaration, error", [
    ({"task": "detection"}, "'task' must be 'segmentation' or 'depth'"),
    ({**SEGMENTATION, "classes": ["a", "a"]}, "class names repeat: ['a']"),
    ({**SEGMENTATION, "palette": [[0, 0, 0]]}, "'palette' must hold one [r, g, b] (0-255) per class"),
    ({**SEGMENTATION, "ignore_index": 1}, "ignore_index 1 is a class id"),
    ({**SEGMENTATION, "reduce_zero_label": True, "ignore_index": 0}, "set ignore_index to 255"),
    ({**SEGMENTATION, "ignore_index": 2.5}, "'ignore_index' must be an integer"),
    ({**SEGMENTATION, "splits": {"train": {"images": "x"}}}, "'splits' maps each split"),
    ({"task": "depth"}, "depth datasets declare 'max_depth'"),
    ({"task": "depth", "max_depth": 10, "min_depth": 20}, "0 <= min_depth < max_depth"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_declaration_that_makes_no_sense_is_refused(declaration, error, tmp_path):
    from pe_dense.data.custom import read_declaration

    (tmp_path / "dataset.json").write_text(json.dumps(declaration))
    with pytest.raises(DatasetError) as refused:
        read_declaration(tmp_path)
    assert error in str(refused.value) and str(tmp_path / "dataset.json") in str(refused.value)


def test_a_declaration_takes_the_default_folders_and_settings(tmp_path):
    from pe_dense.data.custom import read_declaration

    (tmp_path / "dataset.json").write_text(json.dumps({"task": "depth", "max_depth": 80}))
    data = read_declaration(tmp_path / "dataset.json")
    assert data.splits == {"train": {"images": "images/train", "labels": "depth/train"},
                           "val": {"images": "images/val", "labels": "depth/val"}}
    assert (data.depth_scale, data.min_depth, data.max_depth, data.focal_length) == (1e-3, 1e-3, 80, None)
    (tmp_path / "roads.json").write_text(json.dumps({"task": "depth", "max_depth": 80}))
    with pytest.raises(DatasetError, match="roads.json: a dataset is declared by a file named dataset.json"):
        read_declaration(tmp_path / "roads.json")  # training reads the declaration by its folder


def test_image_sizes_are_read_as_the_exif_orientation_turns_them(tmp_path):
    from PIL import Image

    path = write_coco(tmp_path, images=1)  # 64 wide, 48 high on disk
    image = Image.open(tmp_path / "pics/shot_0.jpg")
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned a quarter: 48 wide, 64 high
    image.save(tmp_path / "pics/shot_0.jpg", exif=exif)
    with pytest.raises(DatasetError, match="the json says 64x48 but .* is 48x64"):
        check_coco(path, tmp_path / "pics")

    def turned(coco):
        coco["images"][0].update(width=48, height=64)
        coco["annotations"] = []

    assert check_coco(_edit(path, turned), tmp_path / "pics").summary.sizes == {(48, 64): 1}
