"""projects/DETA in detectron2: IoU assignment, losses, training step, inference, checkpoints (own,
released DETA-for-PE layout, PE encoders), resume, every config, tools/train_net.py and ``pe-dense detect``."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import randomize_, write_coco
from fitting import assert_loss_falls, fit_detector_batch

pytestmark = pytest.mark.suite("detectron2")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "projects/DETA/configs"
TINY_CONFIG = CONFIGS / "shapes/deta_PEspatial_T_shapes.py"
STAGE_CONFIGS = sorted(p for p in CONFIGS.rglob("*.py") if p.parent.name != "common")
# Two encoder blocks, one transformer layer each way, few queries: fast, every piece exercised.
SMALL = ["model.backbone.net.keep_blocks=2", "model.backbone.net.global_blocks=[1]",
         "model.transformer.num_encoder_layers=1", "model.transformer.num_decoder_layers=2",
         "model.transformer.num_queries=30"]


@pytest.fixture(scope="module")
def shapes_names(tmp_path_factory):
    from pe_dense.data.shapes import SplitSpec
    from pe_dense.integrations.detectron2 import register_shapes

    root = tmp_path_factory.mktemp("shapes")
    return register_shapes(root, prefix="shapes_deta", splits={"train": SplitSpec(12, 0), "val": SplitSpec(6, 1)})


def data_overrides(output_dir):
    return ["dataloader.train.dataset.names=shapes_deta_train", "dataloader.test.dataset.names=shapes_deta_val",
            "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
            "train.device=cpu", f"train.output_dir={output_dir}"]


def tiny_cfg(output_dir, *overrides):
    from detectron2.config import LazyConfig

    return LazyConfig.apply_overrides(LazyConfig.load(str(TINY_CONFIG)),
                                      [*SMALL, *data_overrides(output_dir), *overrides])


def build(cfg, seed=0):
    from detectron2.config import instantiate

    torch.manual_seed(seed)
    return instantiate(cfg.model)


# ------------------------------------------------------------------ assignment
def cxcywh(*xyxy):
    from torchvision.ops import box_convert

    return box_convert(torch.tensor(xyxy, dtype=torch.float32), "xyxy", "cxcywh")


def test_query_assignment_keeps_iou_06_positives_and_top_4_per_box():
    from pe_deta.assigner import QueryAssigner

    gt = cxcywh([0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9])
    # six proposals on box 0 with IoU 1, 0.9, 0.8, 0.7, 0.64 and 0.5; one on box 1 with IoU 0.25; one far away
    proposals = cxcywh([0, 0, 0.4, 0.4], [0, 0, 0.4, 0.36], [0, 0, 0.4, 0.32], [0, 0, 0.4, 0.28],
                       [0, 0, 0.4, 0.256], [0, 0, 0.4, 0.2], [0.5, 0.5, 0.7, 0.7], [0.95, 0.95, 1.0, 1.0])
    pred, gt_idx = QueryAssigner(num_queries=40)(proposals, gt)  # up to 10 positives
    pairs = sorted(zip(pred.tolist(), gt_idx.tolist()))
    # box 0: five proposals over 0.6, capped at its best four; box 1: its best proposal (a low-quality match)
    assert pairs == [(0, 0), (1, 0), (2, 0), (3, 0), (6, 1)]
    # a quarter of 8 samples may be positive: two, before the per-box cap
    pred, gt_idx = QueryAssigner(num_queries=8, positive_fraction=0.25)(proposals, gt)
    assert len(pred) == 2
    empty = QueryAssigner(num_queries=8)(proposals, gt[:0])
    assert empty[0].numel() == empty[1].numel() == 0


def test_proposal_assignment_uses_the_rpn_thresholds_and_sample_size():
    from pe_deta.assigner import ProposalAssigner

    gt = cxcywh([0.0, 0.0, 0.5, 0.5])
    # IoU 1, 0.8, 0.5 (ignored, between 0.3 and 0.7), 0.1 (negative)
    anchors = cxcywh([0, 0, 0.5, 0.5], [0, 0, 0.5, 0.4], [0, 0, 0.5, 0.25], [0, 0, 0.5, 0.05])
    pred, gt_idx = ProposalAssigner()(anchors, gt)
    assert sorted(pred.tolist()) == [0, 1] and gt_idx.tolist() == [0, 0]
    # a box whose best anchor is below 0.3 still takes it
    far = cxcywh([0.0, 0.0, 0.1, 0.1])
    pred, _ = ProposalAssigner()(anchors, far)
    assert pred.tolist() == [3]
    many = cxcywh(*[[0, 0, 0.5, 0.5]] * 300)
    pred, _ = ProposalAssigner(topk_per_gt=1000)(many, gt)
    assert len(pred) == 128  # 256 samples, half positive


def test_losses_are_the_published_weights_times_focal_l1_giou():
    from torchvision.ops import sigmoid_focal_loss

    from pe_deta.criterion import DETACriterion

    criterion = DETACriterion(num_classes=3, num_queries=4)
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * 4] * 2)
    targets = [{"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.2]])},
               {"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]])}]
    pairs = [(torch.tensor([1]), torch.tensor([0])), (torch.tensor([], dtype=torch.long),) * 2]
    terms = criterion.terms(logits, boxes, targets, pairs, num_boxes=1.5)
    onehot = torch.zeros(2, 4, 3)
    onehot[0, 1, 2] = 1
    assert terms["loss_ce"].item() == pytest.approx(sigmoid_focal_loss(logits, onehot, reduction="sum").item() / 1.5)
    assert terms["loss_bbox"].item() == pytest.approx(5 * 0.2 / 1.5)
    giou = 0.2 * 0.2 / (0.4 * 0.2)  # the prediction lies inside the target: IoU 0.5, no empty hull
    assert terms["loss_giou"].item() == pytest.approx(2 * (1 - giou) / 1.5)


# ------------------------------------------------------------------ the model
def test_training_step_gives_every_loss_and_gradients_reach_the_encoder(shapes_names, tmp_path):
    from detectron2.config import instantiate

    cfg = tiny_cfg(tmp_path)
    model = build(cfg).train()
    batch = next(iter(instantiate(cfg.dataloader.train)))
    losses = model(batch)
    names = {f"loss_{t}{s}" for t in ("ce", "bbox", "giou") for s in ("", "_0", "_enc")}
    assert set(losses) == names
    assert all(torch.isfinite(v) and v >= 0 for v in losses.values())
    sum(losses.values()).backward()
    encoder = model.backbone.net
    assert encoder.conv1.weight.grad.abs().sum() > 0
    assert encoder.transformer.resblocks[1].mlp.c_fc.weight.grad.abs().sum() > 0
    assert model.transformer.encoder.layers[0].self_attn.sampling_offsets.weight.grad.abs().sum() > 0


def test_inference_gives_at_most_100_instances_at_the_image_size(shapes_names, tmp_path):
    model = build(tiny_cfg(tmp_path, "model.transformer.num_queries=60")).eval()
    image = torch.randint(0, 255, (3, 256, 192), dtype=torch.uint8)
    with torch.no_grad():
        out = model([{"image": image, "height": 128, "width": 96}])[0]["instances"]
    assert out.image_size == (128, 96) and len(out) == 100
    assert (out.scores[:-1] >= out.scores[1:]).all() and int(out.pred_classes.max()) < 4
    boxes = out.pred_boxes.tensor
    assert (boxes[:, 0::2] <= 96).all() and (boxes[:, 1::2] <= 128).all() and (boxes >= 0).all()
    with pytest.raises(ValueError, match="exceed the backbone's square padding of 256"):
        model([{"image": torch.zeros(3, 300, 200, dtype=torch.uint8)}])


def test_checkpoint_round_trip_through_detectron2(tmp_path):
    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer

    cfg = tiny_cfg(tmp_path)
    saved = randomize_(build(cfg, seed=0), seed=1)
    PEDetectionCheckpointer(saved, str(tmp_path)).save("model_test", iteration=7)
    loaded = build(cfg, seed=2)
    assert PEDetectionCheckpointer(loaded).load(str(tmp_path / "model_test.pth"))["iteration"] == 7
    for key, value in saved.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def released_layout(model, num_classes=91, class_ids=None):
    """A state dict as the released DETA-for-PE code saves one for ``model``'s architecture."""
    import argparse

    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone.net."):
            rest = key[len("backbone.net."):]
            state["backbone.0.body." + rest] = value[None] if rest == "positional_embedding" else value
        elif key.startswith("backbone."):
            state["backbone.0.body." + key[len("backbone."):]] = value
        else:
            state[key] = value
    proposal_head = f"class_embed.{len(model.class_embed) - 1}."
    for key in [k for k in state if k.startswith(("class_embed.", "bbox_embed."))]:
        if key.startswith("class_embed."):  # released heads score every dataset class id
            full = torch.randn((num_classes, *state[key].shape[1:]))
            # the proposal head's objectness is its row 0; its other rows are never read
            rows = [0, *class_ids[:-1]] if key.startswith(proposal_head) else class_ids
            full[torch.tensor(rows)] = state[key]
            state[key] = full
        state["transformer.decoder." + key] = state[key]
    head_dim = model.backbone.net.config.head_dim
    state["backbone.0.body.rope_win.freqs_cos"] = torch.zeros(64, head_dim)
    state["backbone.0.body.rope_glb.freqs_sin"] = torch.zeros(256, head_dim)
    state["backbone.0.body.transformer.resblocks.0.attn.rope.freqs_cos"] = torch.zeros(64, head_dim)
    return {"model": state, "optimizer": {}, "epoch": 2, "args": argparse.Namespace(lr=5e-5, backbone="pev1")}


def test_released_deta_checkpoint_loads_with_no_missing_or_unexpected_key(shapes_names, tmp_path):
    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer

    class_ids = [3, 7, 11, 20]  # our 4 classes sit at these rows of the released 91-way heads
    cfg = tiny_cfg(tmp_path, f"model.released_class_ids={class_ids}")
    reference = randomize_(build(cfg, seed=0), seed=1).eval()
    torch.save(released_layout(reference, class_ids=class_ids), tmp_path / "deta_released.pth")

    loaded = build(cfg, seed=2).eval()
    checkpointer = PEDetectionCheckpointer(loaded)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(tmp_path / "deta_released.pth")))
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    for key, value in reference.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    image = torch.randint(0, 255, (3, 256, 256), dtype=torch.uint8)
    with torch.no_grad():
        a, b = (m([{"image": image}])[0]["instances"] for m in (reference, loaded))
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)

    bad = released_layout(reference, class_ids=class_ids)
    bad["model"]["transformer.decoder.class_embed.0.bias"] = bad["model"]["class_embed.0.bias"] + 1
    torch.save(bad, tmp_path / "bad.pth")
    from pe_dense.models import CheckpointError

    with pytest.raises(CheckpointError, match="differs from class_embed.0.bias"):
        PEDetectionCheckpointer(build(cfg)).load_model_weights(str(tmp_path / "bad.pth"))


def test_pe_encoder_initialises_the_backbone_patch_and_position_grid_fitted(tmp_path):
    """A released PE encoder (patch 14, 32 x 32 table) into a DETA backbone at patch 16 with a 24 x 24
    table, as the released G recipe builds it."""
    from detectron2.config import LazyCall as L

    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer
    from pe_dense.models import PEVisionTransformer, get_config, resize_patch_embed
    from pe_dense.models.pos_embed import adapt_pos_embed
    from pe_deta.backbone import encoder_config

    small_g = get_config("PE-Spatial-G14-448").replace(width=64, depth=2, heads=2, mlp_width=128)
    cfg = tiny_cfg(tmp_path, "model.backbone.net.keep_blocks=null", "model.backbone.net.rope_pretrain_grid=16")
    cfg.model.backbone.net.model = L(encoder_config)(model=small_g, position_grid=24)
    encoder = randomize_(PEVisionTransformer(small_g), seed=6).state_dict()
    torch.save({"state_dict": {"visual." + k: v for k, v in encoder.items()}}, tmp_path / "pe.pt")

    detector = build(cfg)
    assert detector.backbone.net.positional_embedding.shape == (24 * 24, 64)
    heads_before = detector.class_embed[0].weight.clone()
    missing = PEDetectionCheckpointer(detector).load_model_weights(str(tmp_path / "pe.pt"))
    assert missing and not [k for k in missing if k.startswith("backbone.net.")]
    state = detector.state_dict()
    assert torch.allclose(state["backbone.net.conv1.weight"], resize_patch_embed(encoder["conv1.weight"], 16))
    torch.testing.assert_close(state["backbone.net.positional_embedding"],
                               adapt_pos_embed(encoder["positional_embedding"], 24, 24, "bilinear"))
    assert torch.equal(state["backbone.net.transformer.resblocks.1.mlp.c_fc.weight"],
                       encoder["transformer.resblocks.1.mlp.c_fc.weight"])
    assert torch.equal(detector.class_embed[0].weight, heads_before)


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: p.stem)
def test_every_deta_config_builds_and_runs_a_step(path, shapes_names, tmp_path):
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(path))
    cfg = LazyConfig.apply_overrides(cfg, [*SMALL, "model.backbone.square_pad=256"])
    assert cfg.optimizer.lr > 0 and cfg.train.max_iter > 0 and cfg.model.input_format == "RGB"
    model = build(cfg).train()
    image = torch.randint(0, 255, (3, 224, 256), dtype=torch.uint8)
    from detectron2.structures import Boxes, Instances

    instances = Instances((224, 256), gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 100.0, 120.0]])),
                          gt_classes=torch.tensor([1]))
    losses = model([{"image": image, "instances": instances}])
    assert all(torch.isfinite(v) for v in losses.values())
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert optimizer.clip_max_norm == 0.1
    factors = {name: group["lr"] / cfg.optimizer.lr for group in optimizer.param_groups for name in
               [n for n, p in model.named_parameters() if any(p is q for q in group["params"])]}
    assert factors["class_embed.0.weight"] == pytest.approx(1.0)
    assert factors["transformer.encoder.layers.0.self_attn.sampling_offsets.weight"] == pytest.approx(0.1)


def test_backbone_layer_decay_runs_over_the_built_backbones_blocks(tmp_path):
    from detectron2.config import instantiate

    cfg = tiny_cfg(tmp_path)  # 2 encoder blocks; backbone lr = lr
    cfg.optimizer.params.lr_decay_rate = 0.5
    model = build(cfg)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    lr = {id(p): g["lr"] / cfg.optimizer.lr for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr[id(named["backbone.net.conv1.weight"])] == pytest.approx(0.5**3)
    assert lr[id(named["backbone.net.transformer.resblocks.1.attn.in_proj_weight"])] == pytest.approx(0.5)
    assert lr[id(named["transformer.encoder.layers.0.self_attn.sampling_offsets.weight"])] == pytest.approx(0.1)
    assert lr[id(named["class_embed.0.weight"])] == pytest.approx(1.0)


# ------------------------------------------------------------------ tools/train_net.py
def train_net(argv):
    spec = importlib.util.spec_from_file_location("train_net", REPO / "tools/train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(module.argument_parser().parse_args(argv))


def train_argv(output_dir, *overrides, resume=False):
    return ["--config-file", str(TINY_CONFIG), *(["--resume"] if resume else []), *SMALL, *data_overrides(output_dir),
            "train.log_period=1", "train.eval_period=0", *overrides]


def metrics(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "metrics.json").read_text().splitlines()]


def test_train_net_trains_resumes_and_evaluates(shapes_names, tmp_path):
    out = tmp_path / "run"
    train_net(train_argv(out, "train.max_iter=3", "train.checkpointer.period=2"))
    first = torch.load(out / "model_final.pth", weights_only=True)
    assert first["iteration"] == 2 and "optimizer" in first["trainer"]
    train_net(train_argv(out, "train.max_iter=5", "train.checkpointer.period=2", resume=True))
    assert [m["iteration"] for m in metrics(out) if "total_loss" in m] == [0, 1, 2, 3, 4]
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 4
    results = json.loads((out / "evaluation.json").read_text())
    assert set(results) == {"bbox"} and 0 <= results["bbox"]["AP"] <= 100


def test_train_net_trains_on_coco_files_with_their_classes(tmp_path, capsys):
    from pe_dense.cli import main

    train_json = write_coco(tmp_path, categories=((11, "bolt"), (4, "nut"), (30, "washer")), masks=False, images=2)
    out = tmp_path / "run"
    train_net(["--config-file", str(TINY_CONFIG), *SMALL, *data_overrides(out)[2:], "train.max_iter=1",
               "train.eval_period=0", *(f"custom_data.{split}_{kind}={path}" for split in ("train", "val")
                                        for kind, path in (("json", train_json), ("images", tmp_path / "pics")))])
    assert "nut 4, bolt 4, washer 4" in capsys.readouterr().out  # in category id order, train and val
    weights = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert weights["class_embed.0.weight"].shape[0] == 3
    assert set(json.loads((out / "evaluation.json").read_text())) == {"bbox"}
    predicted = tmp_path / "predicted"
    assert main(["detect", str(tmp_path / "pics/shot_0.jpg"), "--config", str(out / "config.yaml"), "--weights",
                 str(out / "model_final.pth"), "--out", str(predicted)]) == 0
    assert json.loads((predicted / "detect.json").read_text())["classes"] == ["nut", "bolt", "washer"]


def test_detect_cli_runs_a_deta_config(shapes_names, tmp_path):
    from pe_dense.cli import main
    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer

    cfg = tiny_cfg(tmp_path)
    PEDetectionCheckpointer(randomize_(build(cfg), seed=1), str(tmp_path)).save("model_final")
    from detectron2.data import DatasetCatalog

    image = Path(DatasetCatalog.get("shapes_deta_val")[0]["file_name"])
    overrides = [*SMALL, "dataloader.test.dataset.names=shapes_deta_val"]
    code = main(["detect", str(image), "--config", str(TINY_CONFIG), "--weights", str(tmp_path / "model_final.pth"),
                 "--out", str(tmp_path / "out"), "--device", "cpu", *[f"--set={o}" for o in overrides]])
    assert code == 0
    detections = json.loads((tmp_path / "out/detections.json").read_text())
    assert len(detections) == 100 and {d["category_id"] for d in detections} <= {1, 2, 3, 4}
    assert (tmp_path / "out" / f"{image.stem}.png").is_file()


# ------------------------------------------------------------------ the released DETA-for-PE code
@pytest.fixture
def released_deta(monkeypatch):
    """The released DETA_pe modules from $PE_OFFICIAL_SOURCE, their CUDA-only attention swapped for the
    pure-PyTorch function the same code ships; its top-level ``models``/``util`` packages are removed
    from sys.modules afterwards."""
    import sys
    import types

    from conftest import _official_source

    root = _official_source("apps/detection/DETA_pe/models/deformable_detr.py").parents[1]
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setitem(sys.modules, "MultiScaleDeformableAttention", types.ModuleType("MultiScaleDeformableAttention"))
    modules = {name: importlib.import_module(f"models.{name}") for name in
               ("deformable_detr", "backbone", "pev1", "deformable_transformer", "position_encoding")}
    functions = importlib.import_module("models.ops.functions")
    attention = importlib.import_module("models.ops.modules.ms_deform_attn")

    def pure_pytorch(value, shapes, starts, locations, weights, im2col_step):
        return functions.ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    monkeypatch.setattr(attention.MSDeformAttnFunction, "apply", staticmethod(pure_pytorch))
    yield types.SimpleNamespace(**modules, misc=importlib.import_module("util.misc"))
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("models", "util"):
            del sys.modules[name]


@pytest.mark.suite("pe_official_source")
def test_equals_the_released_deta_code(released_deta, tmp_path):
    """The released DeformableDETR (two-stage, box refinement, DETA's proposal choice) over its PE
    backbone, and ours, with the same weights through our key map: the same proposals, boxes and logits."""
    from detectron2.structures import ImageList

    from pe_dense.integrations.detectron2 import PEDetectionCheckpointer
    from pe_dense.models import get_config

    r = released_deta
    config = get_config("PE-Spatial-G14-448").replace(width=64, depth=3, heads=2, mlp_width=128, image_size=8 * 14)
    body = r.pev1.PEv1_simpleFPN(
        img_size=256, patch_size=16, embed_dim=64, depth=3, num_heads=2, mlp_ratio=2.0, drop_path_rate=0.0,
        window_size=8, window_block_indexes=[0, 1], pt_hw_seq_len=16, pretrain_img_size=128,
        pretrain_use_cls_token=False, tile_posemb=True, init_values=0.1)
    backbone = r.backbone.PEv1Backbone.__new__(r.backbone.PEv1Backbone)
    torch.nn.Module.__init__(backbone)
    backbone.body, backbone.features, backbone.bf16, backbone.fp16 = body, body._out_features, False, False
    backbone.strides, backbone.num_channels = [8, 16, 32], [32, 64, 64]
    joiner = r.backbone.Joiner(backbone, r.position_encoding.PositionEmbeddingSine(128, normalize=True))
    transformer = r.deformable_transformer.DeformableTransformer(
        d_model=256, nhead=8, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=128, dropout=0.0,
        return_intermediate_dec=True, num_feature_levels=5, two_stage=True, two_stage_num_proposals=40,
        assign_first_stage=True)
    torch.manual_seed(0)
    released = r.deformable_detr.DeformableDETR(joiner, transformer, num_classes=91, num_queries=40,
                                                num_feature_levels=5, aux_loss=True, with_box_refine=True,
                                                two_stage=True)
    state = randomize_(released, seed=3).state_dict()
    torch.save({"model": state}, tmp_path / "released.pth")

    class_ids = [3, 7, 11, 20]
    cfg = tiny_cfg(tmp_path, "model.backbone.net.keep_blocks=null", "model.backbone.net.global_blocks=[2]",
                   "model.backbone.net.rope_pretrain_grid=16", "model.backbone.net.pos_embed_mode=tile",
                   f"model.released_class_ids={class_ids}")
    cfg.model.backbone.net.model = config
    cfg.model.transformer.update(d_model=256, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=128,
                                 num_queries=40)
    ours = build(cfg).eval()
    checkpointer = PEDetectionCheckpointer(ours)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(tmp_path / "released.pth")))
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []

    torch.manual_seed(5)
    images = torch.randn(2, 3, 256, 256)
    sizes = [(256, 256), (192, 224)]  # the second image is padded
    mask = torch.ones(2, 256, 256, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        mask[i, :h, :w] = False
        images[i, :, h:] = 0
        images[i, :, :, w:] = 0
    released.eval()
    with torch.no_grad():
        expected = released(r.misc.NestedTensor(images, mask))
        got = ours.forward_raw(ImageList(images, sizes))
    torch.testing.assert_close(got["init_reference"], expected["init_reference"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["boxes"][-1], expected["pred_boxes"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["logits"][-1], expected["pred_logits"][..., class_ids], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["boxes"][0], expected["aux_outputs"][0]["pred_boxes"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["enc_boxes"], expected["enc_outputs"]["pred_boxes"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["anchors"], expected["enc_outputs"]["anchors"])
    torch.testing.assert_close(got["enc_logits"][..., 0], expected["enc_outputs"]["pred_logits"][..., 0],
                               atol=1e-4, rtol=1e-4)  # objectness, which chose the proposals


# ------------------------------------------------------------------ test-time augmentation
def test_tta_with_one_view_is_the_model_and_flipped_views_map_back(shapes_names, tmp_path):
    import numpy as np

    from pe_deta.tta import DETAWithTTA

    model = build(tiny_cfg(tmp_path, "model.transformer.num_queries=60")).eval()
    torch.manual_seed(0)
    image = torch.randint(0, 255, (3, 192, 256), dtype=torch.uint8)
    with torch.no_grad():
        plain = model([{"image": image}])[0]["instances"]
    single = DETAWithTTA(model, sizes=[256], flip=False, soft_nms_method="hard")([{"image": image}])[0]["instances"]
    torch.testing.assert_close(single.pred_boxes.tensor, plain.pred_boxes.tensor)
    assert torch.equal(single.pred_classes, plain.pred_classes)

    tta = DETAWithTTA(model, sizes=[256])
    pixels = image.permute(1, 2, 0).numpy()
    with torch.no_grad():
        flipped = tta.view_detections(pixels, 256, True, (192, 256))
        mirrored = tta.view_detections(np.ascontiguousarray(pixels[:, ::-1]), 256, False, (192, 256))
    expected = mirrored[0][:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1]) + torch.tensor([256.0, 0, 256, 0])
    torch.testing.assert_close(flipped[0], expected, atol=1e-3, rtol=1e-4)


def test_tta_views_merge_and_keep_the_size_ranges(shapes_names, tmp_path):
    from pe_deta.tta import DETAWithTTA

    model = build(tiny_cfg(tmp_path, "model.transformer.num_queries=60")).eval()
    image = torch.randint(0, 255, (3, 128, 256), dtype=torch.uint8)  # as a test mapper left it
    tta = DETAWithTTA(model, sizes=[256, 192], size_ranges=[[0, 10000], [40, 10000]])
    out = tta([{"image": image, "height": 64, "width": 128}])[0]["instances"]
    assert out.image_size == (64, 128) and 0 < len(out) <= 100
    assert (out.scores[:-1] >= out.scores[1:]).all()
    with pytest.raises(ValueError, match="2 sizes but 1 size ranges"):
        DETAWithTTA(model, sizes=[256, 192], size_ranges=[[0, 1]])


def test_train_net_evaluates_with_tta(shapes_names, tmp_path):
    out = tmp_path / "run"
    train_net(train_argv(out, "train.max_iter=1"))
    argv = train_argv(tmp_path / "tta", f"train.init_checkpoint={out / 'model_final.pth'}", "tta.sizes=[256,192]")
    train_net(["--eval-only", "--tta", *argv])
    results = json.loads((tmp_path / "tta/evaluation.json").read_text())
    assert 0 <= results["bbox"]["AP"] <= 100
    with pytest.raises(SystemExit, match="add --eval-only"):
        train_net(["--tta", *argv])


def test_every_parameter_trains_and_the_detector_fits_a_batch(shapes_names, tmp_path):
    """The fast stand-in of the learning run below (slow tier)."""
    losses, silent = fit_detector_batch(tiny_cfg(tmp_path), steps=10)
    assert not silent  # encoder, both transformer stages, the proposal and detection heads
    assert_loss_falls(losses, "DETA on one batch")


@pytest.mark.slow
def test_loss_falls_in_tens_of_iterations(shapes_names, tmp_path):
    import numpy as np

    train_net(train_argv(tmp_path, "train.max_iter=40", "dataloader.train.total_batch_size=4"))
    losses = [m["total_loss"] for m in metrics(tmp_path) if "total_loss" in m]
    assert len(losses) == 40
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.85 * first, (first, last)  # measured: 11.06 -> 7.41 (0.67)
