"""Segmentation and depth on one's own data (docs/custom_data.md): folders of images with grey masks or depth
maps (.npy in metres, 16-bit PNGs) declared by a dataset.json, trained with `tools/train_seg.py --data`, resumed,
evaluated and run with `pe-dense segment/depth`; every bad dataset is refused with one line before any output."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pe_dense.cli import main as pe_dense

pytestmark = pytest.mark.suite("mmseg")

REPO = Path(__file__).resolve().parents[2]
SEGMENTATION = REPO / "configs/segmentation/scenes/linear_PEspatial_T_scenes.py"
DEPTH = REPO / "configs/depth/scenes/linear_PEspatial_T_scenes.py"
SERIAL = [f"{loader}.{key}={value}" for loader in ("train_dataloader", "val_dataloader", "test_dataloader")
          for key, value in (("num_workers", 0), ("persistent_workers", False))]
SHORT = ["train_dataloader.batch_size=2", "train_cfg.val_interval=100", "default_hooks.checkpoint.interval=2",
         "model.backbone.keep_blocks=2"]
CLASSES = ["sky", "tree", "road", "boat"]  # no mask has a boat: a class without pixels
SIZE = (40, 56)  # height, width


def _image(rng, path, size=SIZE):
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def write_segmentation(root: Path, images=(3, 2)) -> Path:
    """Photos with grey (training) and indexed (validation) masks, 0 unlabelled and 1-3 the classes, under
    folder names of the owner's choosing."""
    rng = np.random.default_rng(0)
    for split, count in zip(("fit", "check"), images):
        (root / "photos" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            _image(rng, root / "photos" / split / f"frame{i}.jpg")
            mask = Image.fromarray(np.repeat(np.arange(SIZE[0])[:, None] * 4 // SIZE[0], SIZE[1], 1).astype(np.uint8))
            if split == "check":  # indexed PNGs, as annotation tools export them: the values count, not the colours
                mask = mask.convert("P")
                mask.putpalette([255, 255, 255] * 256)
            mask.save(root / "labels" / split / f"frame{i}.png")
    declaration = {"task": "segmentation", "classes": CLASSES, "palette": [[0, 0, 255], [0, 255, 0], [90, 90, 90],
                                                                         [255, 0, 0]],
                   "reduce_zero_label": True,
                   "splits": {"train": {"images": "photos/fit", "labels": "labels/fit"},
                              "val": {"images": "photos/check", "labels": "labels/check"}}}
    (root / "dataset.json").write_text(json.dumps(declaration))
    return root


def write_depth(root: Path) -> Path:
    """Training depth as .npy in metres, validation depth as 16-bit PNGs in half-millimetres, a focal length."""
    rng = np.random.default_rng(1)
    depth = np.linspace(0.5, 4.0, SIZE[1], dtype=np.float32)[None].repeat(SIZE[0], 0)
    for split, count in (("a", 3), ("b", 2)):
        (root / "rgb" / split).mkdir(parents=True)
        (root / "range" / split).mkdir(parents=True)
        for i in range(count):
            _image(rng, root / "rgb" / split / f"{i:03d}.png")
            if split == "a":
                np.save(root / "range" / split / f"{i:03d}.npy", depth)
            else:
                Image.fromarray((depth / 5e-4).round().astype(np.uint16)).save(root / "range" / split / f"{i:03d}.png")
    declaration = {"task": "depth", "depth_scale": 5e-4, "min_depth": 0.1, "max_depth": 5.0, "focal_length": 60.0,
                   "splits": {"train": {"images": "rgb/a", "labels": "range/a"},
                              "val": {"images": "rgb/b", "labels": "range/b"}}}
    (root / "dataset.json").write_text(json.dumps(declaration))
    return root


def _train(train_seg, config, data, work, *extra):
    return train_seg(["--config", str(config), "--data", str(data), "--work-dir", str(work), "--cfg-options",
                      *SERIAL, *SHORT, *extra])


def test_segmentation_trains_resumes_evaluates_and_predicts_with_the_class_names(tmp_path, train_seg, capsys):
    data, work = write_segmentation(tmp_path / "my data"), tmp_path / "work"
    assert _train(train_seg, SEGMENTATION, data, work, "train_cfg.max_iters=2") == 0
    output = capsys.readouterr()
    assert "segmentation dataset" in output.out and "train 3 images, val 2 images" in output.out
    assert "sky" in output.out and "warning:" in output.err and "boat" in output.err  # and training went on
    assert _train(train_seg, SEGMENTATION, data, work, "train_cfg.max_iters=4", "--resume") == 0
    assert "resumed epoch: 0, iter: 2" in sorted(work.glob("*/*.log"))[-1].read_text()
    config = work / SEGMENTATION.name  # the run's own config: the declared classes, ignore index, heads
    assert train_seg(["--config", str(config), "--data", str(data), "--work-dir", str(work), "--test",
                      str(work / "iter_4.pth"), "--cfg-options", *SERIAL]) == 0
    log = sorted(work.glob("*/*.log"))[-1].read_text()
    assert "per class results" in log and all(name in log for name in CLASSES)
    assert {"mIoU", "aAcc"} <= json.loads((work / "evaluation.json").read_text()).keys()
    out = tmp_path / "predicted"
    assert pe_dense(["segment", str(data / "photos/check"), "--config", str(config), "--weights",
                     str(work / "iter_4.pth"), "--out", str(out)]) == 0
    manifest = json.loads((out / "segment.json").read_text())
    assert manifest["classes"] == CLASSES and manifest["palette"][2] == [90, 90, 90]
    labels = np.asarray(Image.open(out / "frame0.png"))
    assert labels.shape == SIZE and set(np.unique(labels)) <= {0, 1, 2, 3}
    assert set(manifest["images"][0]["classes"]) <= set(CLASSES)


def test_depth_trains_from_npy_and_png_and_predicts_in_metres_with_the_declared_camera(tmp_path, train_seg, capsys):
    data, work = write_depth(tmp_path / "captures"), tmp_path / "work"
    assert _train(train_seg, DEPTH, data, work, "train_cfg.max_iters=2", "train_cfg.val_interval=2") == 0
    output = capsys.readouterr().out
    assert "depth dataset" in output and "depth (metres), all splits: min 0.5, median 2.25, max 4" in output
    metrics = json.loads((work / "evaluation.json").read_text())
    assert {"d1", "rmse"} <= metrics.keys()
    assert _train(train_seg, DEPTH, data, work, "train_cfg.max_iters=3", "--resume") == 0
    out = tmp_path / "predicted"
    assert pe_dense(["depth", str(data / "rgb/b/000.png"), "--config", str(work / DEPTH.name), "--weights",
                     str(work / "iter_3.pth"), "--out", str(out), "--ply"]) == 0
    manifest = json.loads((out / "depth.json").read_text())
    assert manifest["depth_range_m"] == [0.1, 5.0]  # the declared range, in metres
    assert manifest["images"][0]["focal_length_px"] == 60.0
    depth = np.load(out / "000.npy")
    assert depth.shape == SIZE and 0.1 <= depth.min() and depth.max() <= 5.0


def _mask(root, split="fit", name="frame1"):
    return root / "labels" / split / f"{name}.png"


def mask_of_other_size(root):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(_mask(root))
    return _mask(root)


def mask_beyond_classes(root):
    mask = np.asarray(Image.open(_mask(root))).copy()
    mask[0, 0] = 7
    Image.fromarray(mask).save(_mask(root))
    return _mask(root)


def colour_mask(root):
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(_mask(root))
    return _mask(root)


def missing_mask(root):
    _mask(root).unlink()
    return root / "photos/fit/frame1.jpg"


def empty_split(root):
    for path in (root / "photos/check").iterdir():
        path.unlink()
    return root / "photos/check"


def duplicate_file_name(root):
    Image.open(root / "photos/fit/frame1.jpg").save(root / "photos/fit/frame1.png")
    return "frame1"


def missing_folder(root):
    (root / "labels/check").rename(root / "labels/elsewhere")
    return root / "labels/check"


@pytest.mark.parametrize("damage", [mask_of_other_size, mask_beyond_classes, colour_mask, missing_mask, empty_split,
                                    duplicate_file_name, missing_folder], ids=lambda f: f.__name__)
def test_a_bad_segmentation_dataset_is_refused_in_one_line_before_any_output(damage, tmp_path, train_seg, capsys):
    data = write_segmentation(tmp_path / "data")
    named = damage(data)
    work = tmp_path / "work"
    assert _train(train_seg, SEGMENTATION, data, work, "train_cfg.max_iters=2") == 2
    output = capsys.readouterr()
    lines = output.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_seg: error:") and str(named) in lines[0], output.err
    assert not output.out and not work.exists()


def depth_without_valid_pixel(root):
    path = root / "range/b/001.png"
    Image.fromarray(np.full(SIZE, 60000, np.uint16)).save(path)  # 30 m, beyond the declared 5 m
    return path


def depth_of_other_size(root):
    path = root / "range/a/002.npy"
    np.save(path, np.ones((10, 10), np.float32))
    return path


def depth_in_eight_bits(root):
    path = root / "range/b/000.png"
    Image.fromarray(np.ones(SIZE, np.uint8)).save(path)
    return path


def declaration_without_range(root):
    declaration = json.loads((root / "dataset.json").read_text())
    del declaration["max_depth"]
    (root / "dataset.json").write_text(json.dumps(declaration))
    return root / "dataset.json"


@pytest.mark.parametrize("damage", [depth_without_valid_pixel, depth_of_other_size, depth_in_eight_bits,
                                    declaration_without_range], ids=lambda f: f.__name__)
def test_a_bad_depth_dataset_is_refused_in_one_line_before_any_output(damage, tmp_path, train_seg, capsys):
    data = write_depth(tmp_path / "data")
    named = damage(data)
    work = tmp_path / "work"
    assert _train(train_seg, DEPTH, data, work, "train_cfg.max_iters=2") == 2
    output = capsys.readouterr()
    lines = output.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_seg: error:") and str(named) in lines[0], output.err
    assert not output.out and not work.exists()


def test_a_dataset_of_the_other_task_is_refused(tmp_path, train_seg, capsys):
    data = write_depth(tmp_path / "data")
    assert _train(train_seg, SEGMENTATION, data, tmp_path / "work", "train_cfg.max_iters=2") == 2
    assert "is a depth dataset but the config's model is EncoderDecoder" in capsys.readouterr().err
