"""Detection on one's own COCO-format files (docs/custom_data.md): tools/train_net.py with ``custom_data.*``
checks and summarises the json, takes the classes from its categories (non-contiguous ids, 1 or 300 classes),
trains boxes only from a json without segmentations, resumes, evaluates, and `pe-dense detect` names the
classes from the run's config.yaml; a bad json stops it with one line before anything is written."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import write_coco

pytestmark = pytest.mark.suite("detectron2")

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py"
SMALL = ["model.backbone.net.keep_blocks=2", "model.backbone.net.global_blocks=[1]",
         "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
         "train.log_period=1", "train.eval_period=0"]


def train_net(argv):
    """tools/train_net.py in this process, as its command line runs it."""
    spec = importlib.util.spec_from_file_location("train_net", REPO / "tools/train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(module.argument_parser().parse_args(argv))


def custom_data(train_json, val_json=None):
    """The command line's overrides that name the files (images in ``pics`` next to each json)."""
    val_json = val_json or train_json
    return [f"custom_data.train_json={train_json}", f"custom_data.train_images={train_json.parent / 'pics'}",
            f"custom_data.val_json={val_json}", f"custom_data.val_images={val_json.parent / 'pics'}"]


def custom_argv(out, train_json, val_json=None, *extra):
    return ["--config-file", str(TINY_CONFIG), *SMALL, f"train.output_dir={out}", *custom_data(train_json, val_json),
            *extra]


def test_box_only_json_with_one_class_trains_resumes_and_detect_names_the_class(tmp_path, capsys):
    from pe_dense.cli import main as pe_dense

    train_json = write_coco(tmp_path / "train", categories=((7, "widget"),), masks=False, images=4)
    val_json = write_coco(tmp_path / "val", categories=((7, "widget"),), masks=False, images=2)
    out = tmp_path / "run"
    train_net(custom_argv(out, train_json, val_json, "train.max_iter=2"))
    output = capsys.readouterr()
    assert "train 4 images, val 2 images" in output.out and "widget 6" in output.out
    assert output.err.count("has no segmentations: training boxes only (mask head off)") == 1
    weights = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert weights["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2  # one class and background
    assert not any("mask_head" in key for key in weights)
    assert set(json.loads((out / "evaluation.json").read_text())) == {"bbox"}
    train_net(["--resume", *custom_argv(out, train_json, val_json, "train.max_iter=3")])
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 2
    predicted = tmp_path / "predicted"
    assert pe_dense(["detect", str(tmp_path / "val/pics/shot_0.jpg"), "--config", str(out / "config.yaml"),
                     "--weights", str(out / "model_final.pth"), "--score-threshold", "0", "--out",
                     str(predicted)]) == 0
    assert json.loads((predicted / "detect.json").read_text())["classes"] == ["widget"]
    results = json.loads((predicted / "detections.json").read_text())
    assert results and {r["category_id"] for r in results} == {7}  # the json's own id


def test_three_hundred_classes_with_polygons_train_with_masks(tmp_path, capsys):
    categories = tuple((1000 + 3 * i, f"part{i}") for i in range(300))
    train_json = write_coco(tmp_path, categories=categories, images=2)
    out = tmp_path / "run"
    # 301-way scores of a barely trained model are all below the default threshold: keep a few to be scored
    train_net(custom_argv(out, train_json, None, "train.max_iter=1",
                          "model.roi_heads.box_predictor.test_score_thresh=0",
                          "model.roi_heads.box_predictor.test_topk_per_image=10",
                          "model.proposal_generator.post_nms_topk=[500,50]"))
    warnings = capsys.readouterr().err
    assert "296 class(es) have no instances" in warnings  # four classes are annotated
    weights = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert weights["roi_heads.box_predictor.cls_score.weight"].shape[0] == 301
    assert weights["roi_heads.mask_head.predictor.weight"].shape[0] == 300
    assert set(json.loads((out / "evaluation.json").read_text())) == {"bbox", "segm"}


def test_a_bad_json_stops_training_in_one_line_before_any_output(tmp_path, capsys):
    train_json = write_coco(tmp_path)
    coco = json.loads(train_json.read_text())
    coco["annotations"][1]["bbox"] = [60, 0, 30, 10]
    train_json.write_text(json.dumps(coco))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train_net(custom_argv(out, train_json, None, "train.max_iter=1"))
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_net: error:") and str(train_json) in lines[0]
    assert "annotation 2: bbox [60, 0, 30, 10] lies outside" in lines[0]
    assert not out.exists()


def test_splits_with_other_categories_are_refused(tmp_path, capsys):
    train_json = write_coco(tmp_path / "train", categories=((1, "cat"),))
    val_json = write_coco(tmp_path / "val", categories=((1, "dog"),))
    with pytest.raises(SystemExit):
        train_net(custom_argv(tmp_path / "run", train_json, val_json, "train.max_iter=1"))
    assert "have different categories" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["T", "S", "B", "L", "G"])
def test_the_templates_take_their_classes_from_the_json(size, tmp_path):
    from detectron2.config import LazyConfig, instantiate

    from pe_dense.integrations.detectron2.custom_data import use_coco_files

    path = REPO / f"configs/detection/custom/mask_rcnn_PEspatial_{size}_custom.py"
    train_json = write_coco(tmp_path, categories=((4, "a"), (8, "b"), (15, "c")), images=1)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(path)),
                                     [*custom_data(train_json), "model.backbone.net.keep_blocks=2"])
    summary = use_coco_files(cfg)
    assert summary.counts == {"a": 2, "b": 2, "c": 2}
    assert cfg.model.backbone.net.model.startswith(f"PE-Spatial-{size}")
    assert cfg.dataloader.train.total_batch_size == 16 and cfg.train.max_iter == 5000
    model = instantiate(cfg.model)
    assert model.roi_heads.num_classes == 3 and model.roi_heads.mask_on


def test_a_template_without_its_files_says_how_to_name_them(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train_net(["--config-file", str(REPO / "configs/detection/custom/mask_rcnn_PEspatial_T_custom.py"),
                   f"train.output_dir={tmp_path / 'run'}"])
    assert stop.value.code == 2 and "custom_data.train_json=" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
