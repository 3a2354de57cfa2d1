"""PE Mask R-CNN in detectron2: training steps, inference, checkpoints (own, released layout, PE
encoders), resume, every detection config, tools/train_net.py and ``pe-dense detect``."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_
from fitting import assert_loss_falls, fit_detector_batch

pytestmark = pytest.mark.suite("detectron2")

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py"
DETECTION_CONFIGS = sorted(p for p in (REPO / "configs/detection").rglob("*.py") if p.parent.name != "common")
# Two blocks (one windowed, one global) keep every test fast while exercising both kinds of block.
SMALL = ["model.backbone.net.keep_blocks=2", "model.backbone.net.global_blocks=[1]"]


@pytest.fixture(scope="module")
def shapes_names(tmp_path_factory):
    """A small shapes dataset registered as shapes_test_train / shapes_test_val."""
    from pe_dense.data.shapes import SplitSpec
    from pe_dense.integrations.detectron2 import register_shapes

    root = tmp_path_factory.mktemp("shapes")
    return register_shapes(root, prefix="shapes_test", splits={"train": SplitSpec(12, 0), "val": SplitSpec(6, 1)})


def tiny_cfg(output_dir, *overrides):
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(TINY_CONFIG))
    return LazyConfig.apply_overrides(cfg, [
        *SMALL, "dataloader.train.dataset.names=shapes_test_train", "dataloader.test.dataset.names=shapes_test_val",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "train.device=cpu", f"train.output_dir={output_dir}", *overrides])


def build(cfg, seed=0):
    from detectron2.config import instantiate

    torch.manual_seed(seed)
    return instantiate(cfg.model)


def test_training_step_gives_mask_rcnn_losses_and_inference_gives_instances(shapes_names, tmp_path):
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    cfg = tiny_cfg(tmp_path)
    model = build(cfg).train()
    batch = next(iter(instantiate(cfg.dataloader.train)))
    with EventStorage(0):
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) and v >= 0 for v in losses.values())
    sum(losses.values()).backward()
    encoder = model.backbone.net
    assert encoder.conv1.weight.grad.abs().sum() > 0
    assert encoder.transformer.resblocks[1].mlp.c_fc.weight.grad.abs().sum() > 0

    model.eval()
    image = torch.randint(0, 255, (3, 256, 256), dtype=torch.uint8)
    with torch.no_grad():
        out = model([{"image": image, "height": 128, "width": 160}])[0]["instances"]
    assert out.image_size == (128, 160)
    assert out.pred_masks.shape[1:] == (128, 160) and len(out.pred_boxes) == len(out.scores) == len(out.pred_classes)
    assert len(out) == 0 or int(out.pred_classes.max()) < 4


def test_checkpoint_round_trip_through_detectron2(tmp_path):
    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer

    cfg = tiny_cfg(tmp_path)
    saved = randomize_(build(cfg, seed=0), seed=1)
    PEDetectionCheckpointer(saved, str(tmp_path)).save("model_test", iteration=7)
    loaded = build(cfg, seed=2)
    extra = PEDetectionCheckpointer(loaded).load(str(tmp_path / "model_test.pth"))
    assert extra["iteration"] == 7
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_released_backbone_layout_loads_with_no_missing_backbone_key(tmp_path):
    """A file as released on the hub (facebook/PE-Detection): the whole detector, the encoder under
    ``backbone.net.`` with the (1, N, C) position table of detectron2 conversions and all 12 blocks."""
    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer
    from pe_dense.models import PEVisionTransformer, get_config

    cfg = tiny_cfg(tmp_path)
    detector = randomize_(build(cfg, seed=0), seed=3)
    full_encoder = randomize_(PEVisionTransformer(get_config("PE-Spatial-T16-512")), seed=4).state_dict()
    released = {k: v for k, v in detector.state_dict().items() if not k.startswith("backbone.net.")}
    released.update({"backbone.net." + k: v for k, v in full_encoder.items() if k != "class_embedding"})
    released["backbone.net.positional_embedding"] = full_encoder["positional_embedding"][1:][None]  # no class row
    torch.save({"model": released, "iteration": 66374}, tmp_path / "released.pth")

    loaded = build(cfg, seed=5)
    missing = PEDetectionCheckpointer(loaded).load_model_weights(str(tmp_path / "released.pth"))
    assert missing == []
    state = loaded.state_dict()
    assert torch.equal(state["backbone.net.transformer.resblocks.1.attn.in_proj_weight"],
                       full_encoder["transformer.resblocks.1.attn.in_proj_weight"])
    assert torch.equal(state["backbone.net.positional_embedding"][1:], full_encoder["positional_embedding"][1:])
    assert not state["backbone.net.positional_embedding"][0].any()
    assert torch.equal(state["roi_heads.box_predictor.cls_score.weight"],
                       detector.state_dict()["roi_heads.box_predictor.cls_score.weight"])


def test_pe_encoder_checkpoint_initialises_the_backbone_with_patch_14_to_16(tmp_path):
    """A plain PE .pt (CLIP wrapper, "visual." prefix, text tower, patch 14) as train.init_checkpoint."""
    from detectron2.config import instantiate

    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer
    from pe_dense.models import PEVisionTransformer, get_config, resize_patch_embed

    small_l14 = get_config("PE-Spatial-L14-448").replace(width=64, depth=2, heads=2, mlp_width=128)
    cfg = tiny_cfg(tmp_path, "model.backbone.net.keep_blocks=null", "model.backbone.net.global_blocks=[1]")
    cfg.model.backbone.net.model = small_l14
    encoder = randomize_(PEVisionTransformer(small_l14), seed=6).state_dict()
    clip = {"visual." + k: v for k, v in encoder.items()}
    clip["text.token_embedding.weight"] = torch.zeros(10, 4)
    torch.save({"state_dict": clip}, tmp_path / "pe.pt")

    torch.manual_seed(0)
    detector = instantiate(cfg.model)
    assert detector.backbone.net.rope_pretrain_grid == small_l14.pretrain_grid  # from the model, not the config
    heads_before = detector.state_dict()["roi_heads.box_predictor.cls_score.weight"].clone()
    missing = PEDetectionCheckpointer(detector).load_model_weights(str(tmp_path / "pe.pt"))
    assert missing and not [k for k in missing if k.startswith("backbone.net.")]
    state = detector.state_dict()
    assert state["backbone.net.conv1.weight"].shape[-1] == 16
    assert torch.allclose(state["backbone.net.conv1.weight"], resize_patch_embed(encoder["conv1.weight"], 16))
    assert torch.equal(state["backbone.net.transformer.resblocks.0.mlp.c_fc.weight"],
                       encoder["transformer.resblocks.0.mlp.c_fc.weight"])
    assert torch.equal(state["roi_heads.box_predictor.cls_score.weight"], heads_before)


def test_released_encoder_paths_resolve_from_the_weights_folder(tmp_path, monkeypatch, t16_weights):
    from detectron2.utils.file_io import PathManager

    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer

    monkeypatch.setenv("PE_DENSE_WEIGHTS", str(t16_weights.parent))
    assert PathManager.get_local_path("pe://PE-Spatial-T16-512") == str(t16_weights)
    detector = build(tiny_cfg(tmp_path))
    PEDetectionCheckpointer(detector).load("pe://PE-Spatial-T16-512")
    expected = torch.load(t16_weights, weights_only=True)["transformer.resblocks.1.attn.out_proj.weight"]
    assert torch.equal(detector.state_dict()["backbone.net.transformer.resblocks.1.attn.out_proj.weight"], expected)


class Payload:
    """An arbitrary Python object: unpickling it means importing and running code."""


def test_checkpointer_refuses_pickles_and_mismatched_encoders(tmp_path):
    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer
    from pe_dense.models import CheckpointError, PEVisionTransformer, get_config

    detector = build(tiny_cfg(tmp_path))
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(CheckpointError, match="pickle files can run code"):
        PEDetectionCheckpointer(detector).load(str(tmp_path / "model.pkl"))

    torch.save({"model": {"a": torch.zeros(1)}, "hook": Payload()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="could run code"):
        PEDetectionCheckpointer(detector).load(str(tmp_path / "code.pth"))

    wider = PEVisionTransformer(get_config("PE-Spatial-S16-512"), keep_blocks=2).state_dict()
    torch.save(wider, tmp_path / "s16.pt")
    with pytest.raises(CheckpointError, match="does not fit PE-Spatial-T16-512"):
        PEDetectionCheckpointer(detector).load(str(tmp_path / "s16.pt"))
    assert all(torch.equal(v, before[k]) for k, v in detector.state_dict().items())


def test_shapes_dataset_through_detectron2(shapes_names):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    records = DatasetCatalog.get("shapes_test_val")
    assert len(records) == 6
    assert MetadataCatalog.get("shapes_test_val").thing_classes == ["circle", "square", "triangle", "star"]
    annotations = [a for r in records for a in r["annotations"]]
    assert {a["category_id"] for a in annotations} <= {0, 1, 2, 3}
    kinds = {type(a["segmentation"]).__name__ for a in annotations}
    assert kinds == {"list", "dict"}, "expected both polygons and RLE (occluded shapes) in 6 images"


# ------------------------------------------------------------------ every config
@pytest.mark.parametrize("path", DETECTION_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_detection_config_builds_and_resolves(path):
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import DatasetCatalog

    from pe_dense.integrations.detectron2 import PEBackbone
    from pe_dense.models import get_config, stage_end_blocks

    cfg = LazyConfig.load(str(path))
    name = cfg.model.backbone.net.model
    if path.parent.name != "shapes":  # the published recipes: global attention at the stage ends
        assert list(cfg.model.backbone.net.global_blocks) == list(stage_end_blocks(name))
    cfg = LazyConfig.apply_overrides(cfg, ["model.backbone.net.keep_blocks=2"])
    model = instantiate(cfg.model)  # G at reduced depth
    assert isinstance(model.backbone.net, PEBackbone) and model.backbone.net.patch_size == 16
    assert model.backbone.net.rope_pretrain_grid == get_config(name).pretrain_grid
    family, size = path.stem.split("_")[2:4]  # mask_rcnn_PEspatial_G_coco36ep -> PEspatial, G
    assert name.startswith({"PEspatial": "PE-Spatial-", "PEcore": "PE-Core-"}[family] + size)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert optimizer.param_groups and instantiate(cfg.lr_multiplier) is not None
    # layer decay over the built backbone's 2 blocks: embeddings decay ** 3, block 1 decay ** 1
    lr = {id(p): g["lr"] / cfg.optimizer.lr for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    decay = cfg.optimizer.params.lr_decay_rate
    assert lr[id(params["backbone.net.conv1.weight"])] == pytest.approx(decay**3)
    assert lr[id(params["backbone.net.transformer.resblocks.1.attn.in_proj_weight"])] == pytest.approx(decay)
    assert lr[id(params["roi_heads.box_predictor.cls_score.weight"])] == pytest.approx(1.0)
    for name in (cfg.dataloader.train.dataset.names, cfg.dataloader.test.dataset.names):
        assert name in DatasetCatalog.list()
    mapper = instantiate(cfg.dataloader.train.mapper)
    assert mapper.is_train and mapper.image_format == "RGB"
    assert cfg.dataloader.evaluator._target_.__name__ in ("COCOEvaluator", "LVISEvaluator")


def test_coco_g_config_is_the_published_recipe():
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(REPO / "configs/detection/COCO/mask_rcnn_PEspatial_G_coco36ep.py"))
    net = cfg.model.backbone.net
    assert (net.model, net.patch_size, net.window_size, list(net.global_blocks)) == (
        "PE-Spatial-G14-448", 16, 32, [12, 24, 36, 49])
    assert "rope_pretrain_grid" not in net  # PEBackbone takes the model's, 32 for G (see the tests above and below)
    assert (net.pos_embed_mode, net.drop_path_rate, net.use_act_checkpoint) == ("tile", 0.5, True)
    assert cfg.model.backbone.scale_factors == (4.0, 2.0, 1.0, 0.5) and cfg.model.backbone.square_pad == 1024
    assert list(cfg.model.pixel_mean) == list(cfg.model.pixel_std) == [127.0] * 3 and cfg.model.input_format == "RGB"
    assert (cfg.optimizer.lr, cfg.optimizer.params.lr_decay_rate) == (5e-5, 0.9)
    assert "num_layers" not in cfg.optimizer.params  # read from the built model: 50 blocks for G
    assert cfg.dataloader.train.total_batch_size == 64 and cfg.train.max_iter == 66375
    assert list(cfg.lr_multiplier.scheduler.milestones) == [59000, 63916]
    assert cfg.lr_multiplier.warmup_length * cfg.train.max_iter == pytest.approx(250)


def test_settings_that_follow_from_the_model_follow_an_overridden_model():
    """PE-Core-B16-224 in the G config: RoPE on B's 14-token pretraining grid (not G's 32) and layer
    decay over B's blocks; an explicit grid still wins."""
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(REPO / "configs/detection/COCO/mask_rcnn_PEspatial_G_coco36ep.py"))
    cfg = LazyConfig.apply_overrides(cfg, ["model.backbone.net.model=PE-Core-B16-224",
                                           "model.backbone.net.keep_blocks=3", "model.backbone.net.global_blocks=[2]"])
    model = instantiate(cfg.model)
    assert model.backbone.net.rope_pretrain_grid == 14
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    lr = {id(p): g["lr"] / cfg.optimizer.lr for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr[id(params["backbone.net.conv1.weight"])] == pytest.approx(0.9**4)  # 3 blocks + 1
    assert lr[id(params["backbone.net.transformer.resblocks.0.mlp.c_fc.weight"])] == pytest.approx(0.9**3)

    cfg.model.backbone.net.rope_pretrain_grid = 16
    assert instantiate(cfg.model.backbone.net).rope_pretrain_grid == 16


# ------------------------------------------------------------------ tools/train_net.py
def train_net(argv):
    """Run tools/train_net.py in this process (so it sees the test datasets), as its command line does."""
    spec = importlib.util.spec_from_file_location("train_net", REPO / "tools/train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.argument_parser().parse_args(argv)
    module.main(args)


def metrics(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "metrics.json").read_text().splitlines()]


def train_argv(output_dir, *overrides, resume=False):
    opts = [*SMALL, "dataloader.train.dataset.names=shapes_test_train", "dataloader.test.dataset.names=shapes_test_val",
            "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
            f"train.output_dir={output_dir}", "train.log_period=1", "train.eval_period=0", *overrides]
    return ["--config-file", str(TINY_CONFIG), *(["--resume"] if resume else []), *opts]


def test_resume_after_interruption_continues_at_the_saved_iteration(shapes_names, tmp_path):
    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer

    out = tmp_path / "run"
    # The first run stops at 4 of 8 iterations; its last checkpoint is taken after iteration 3.
    train_net(train_argv(out, "train.max_iter=4", "train.checkpointer.period=2"))
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    first = torch.load(out / "model_final.pth", weights_only=True)
    assert first["iteration"] == 3 and {"optimizer", "hooks"} <= set(first["trainer"])  # optimizer, lr schedule
    train_net(train_argv(out, "train.max_iter=6", "train.checkpointer.period=2", resume=True))
    iterations = [m["iteration"] for m in metrics(out) if "total_loss" in m]
    assert iterations == [0, 1, 2, 3, 4, 5]  # the second run logged 4 and 5 only
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 5
    assert PEDetectionCheckpointer(build(tiny_cfg(out))).load(str(out / "model_final.pth"))["iteration"] == 5


def test_every_parameter_trains_and_the_detector_fits_a_batch(shapes_names, tmp_path):
    """The fast stand-in of the learning run below (slow tier)."""
    losses, silent = fit_detector_batch(tiny_cfg(tmp_path), steps=30)
    assert not silent  # encoder, feature pyramid, RPN, box and mask heads
    assert_loss_falls(losses, "Mask R-CNN on one batch")


@pytest.mark.slow
def test_loss_falls_in_tens_of_iterations(shapes_names, tmp_path):
    train_net(train_argv(tmp_path, "train.max_iter=40", "dataloader.train.total_batch_size=4"))
    losses = [m["total_loss"] for m in metrics(tmp_path) if "total_loss" in m]
    assert len(losses) == 40
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.85 * first, (first, last)  # measured: 0.77
    results = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(results) == {"bbox", "segm"} and all(np.isfinite(results[t]["AP"]) for t in results)


def test_eval_only_reads_the_trained_weights(shapes_names, tmp_path):
    train_net(train_argv(tmp_path / "run", "train.max_iter=2"))
    trained = json.loads((tmp_path / "run/evaluation.json").read_text())
    eval_dir = tmp_path / "eval"
    train_net(["--eval-only", *train_argv(eval_dir, f"train.init_checkpoint={tmp_path / 'run/model_final.pth'}")])
    assert json.loads((eval_dir / "evaluation.json").read_text()) == trained


# ------------------------------------------------------------------ pe-dense detect
def test_detect_cli_writes_pictures_and_coco_results(shapes_names, tmp_path):
    from detectron2.data import MetadataCatalog
    from PIL import Image

    from pe_dense.cli import main
    from pe_dense.data.shapes import render_shapes_image
    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer
    from pe_dense.integrations.detectron2.predict import Detector

    cfg = tiny_cfg(tmp_path)
    PEDetectionCheckpointer(randomize_(build(cfg), seed=8), str(tmp_path)).save("detector")
    for i in range(2):
        Image.fromarray(render_shapes_image(i, seed=9)[0]).save(tmp_path / f"img{i}.png")
    out = tmp_path / "out"
    overrides = [f"--set={o}" for o in SMALL + ["model.roi_heads.box_predictor.test_score_thresh=0.0"]]
    argv = ["detect", str(tmp_path / "img0.png"), str(tmp_path / "img1.png"), "--config", str(TINY_CONFIG),
            "--weights", str(tmp_path / "detector.pth"), "--score-threshold", "0", "--out", str(out), *overrides]
    assert main(argv) == 0
    manifest = json.loads((out / "detect.json").read_text())
    assert [i["name"] for i in manifest["images"]] == ["img0", "img1"]
    assert manifest["classes"] == MetadataCatalog.get("shapes_val").thing_classes
    for entry in manifest["images"]:
        assert Image.open(out / entry["picture"]).size == (256, 256)
    results = json.loads((out / "detections.json").read_text())
    assert len(results) == sum(i["detections"] for i in manifest["images"]) > 0
    assert {r["image_id"] for r in results} <= {1, 2} and {r["category_id"] for r in results} <= {1, 2, 3, 4}
    # the same predictions as the library gives
    detector = Detector(str(TINY_CONFIG), str(tmp_path / "detector.pth"), SMALL[:] + [
        "model.roi_heads.box_predictor.test_score_thresh=0.0"])
    mine = detector.coco_results(detector(np.asarray(Image.open(tmp_path / "img0.png").convert("RGB"))), 1)
    np.testing.assert_allclose([r["bbox"] for r in results if r["image_id"] == 1], [r["bbox"] for r in mine],
                               atol=1e-4)


def test_detect_cli_rejects_bad_inputs_and_writes_nothing(shapes_names, tmp_path, t16_weights, capsys):
    from pe_dense.cli import main

    out = tmp_path / "out"
    base = ["detect", "sample:coffee", "--out", str(out)]
    not_a_detector = tmp_path / "not_a_detector.py"
    not_a_detector.write_text("optimizer = dict(lr=0.1)\n")
    cases = [
        (["--config", str(tmp_path / "nope.py"), "--weights", str(t16_weights)], "does not exist"),
        (["--config", str(not_a_detector), "--weights", str(t16_weights)], "defines no model and no dataloader"),
        (["--config", str(TINY_CONFIG), "--weights", str(t16_weights)], "not a trained detector"),
        (["--config", str(TINY_CONFIG), "--weights", str(t16_weights), "--set", "oops"], "KEY=VALUE"),
        (["--config", str(TINY_CONFIG), "--weights", str(tmp_path / "missing.pth")], "does not exist"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()
