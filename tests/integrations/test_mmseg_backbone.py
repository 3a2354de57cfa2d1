"""PE in mmsegmentation: the backbone equals the encoder, released layouts load, the probe stays frozen,
the linear head, layer-wise lr decay, and safe checkpoint reading."""

import pickle

import pytest
import torch
from conftest import randomize_

pytestmark = pytest.mark.suite("mmseg")

MODEL = "PE-Spatial-T16-512"


@pytest.fixture(scope="module", autouse=True)
def mmseg_scope():
    from mmengine.registry import init_default_scope

    import pe_dense.integrations.mmseg  # noqa: F401  (registers the modules)

    init_default_scope("mmseg")


@pytest.fixture(scope="module")
def reference():
    from pe_dense.models import build_encoder

    return randomize_(build_encoder(MODEL), seed=3)


def test_maps_equal_the_encoders_intermediates(reference, tmp_path):
    from pe_dense.integrations.mmseg import PEBackbone

    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    backbone = PEBackbone(MODEL, weights=str(path), out_indices=(3, -1, 7)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = reference.dense_features_at(x, (3, -1, 7))
        maps = backbone(x)
    assert [m.shape for m in maps] == [(2, 192, 4, 6)] * 3
    for got, want in zip(maps, expected):
        assert torch.equal(got, want)


def _layouts(state, tmp_path):
    from safetensors.torch import save_file

    from pe_dense.models import official_to_timm

    official = tmp_path / "official.pt"
    torch.save(state, official)
    timm = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in official_to_timm(state).items()}, str(timm))
    detectron2 = tmp_path / "detector.pth"
    torch.save({"model": {f"backbone.net.{k}": v for k, v in state.items()}, "iteration": 7}, detectron2)
    clip = tmp_path / "clip.pt"
    torch.save({"state_dict": {f"module.visual.{k}": v for k, v in state.items()}}, clip)
    return [official, timm, detectron2, clip]


def test_released_layouts_load_with_no_missing_key(reference, tmp_path):
    from pe_dense.integrations.mmseg import PEBackbone

    for path in _layouts(reference.state_dict(), tmp_path):
        loaded = PEBackbone(MODEL, weights=str(path)).encoder.state_dict()  # strict: a missing key raises
        assert loaded.keys() == reference.state_dict().keys(), path.name
        assert all(torch.equal(v, reference.state_dict()[k]) for k, v in loaded.items()), path.name


def test_unused_blocks_are_dropped_and_bad_indices_refused():
    from pe_dense.integrations.mmseg import PEBackbone

    assert PEBackbone(MODEL, out_indices=(1, 4)).encoder.num_blocks == 5
    with pytest.raises(ValueError, match="out of range"):
        PEBackbone(MODEL, out_indices=(12,))
    with pytest.raises(ValueError, match="empty"):
        PEBackbone(MODEL, out_indices=())


def test_frozen_backbone_stays_in_eval_without_gradients():
    from pe_dense.integrations.mmseg import PEBackbone

    backbone = PEBackbone(MODEL, out_indices=(2,), frozen=True, drop_path_rate=0.5).train()
    assert not backbone.encoder.training and backbone.training
    assert not any(p.requires_grad for p in backbone.parameters())
    x = torch.randn(1, 3, 32, 32)
    out = backbone(x)[0]
    assert not out.requires_grad
    assert torch.equal(out, backbone(x)[0])  # no drop path in a probe


def test_linear_head_concatenates_layers():
    from mmseg.registry import MODELS

    head = MODELS.build(dict(type="LinearProbeHead", in_channels=[192, 192], in_index=[0, 1], num_classes=5,
                             norm_cfg=dict(type="BN")))
    assert head.conv_seg.in_channels == 384 and head.bn.num_features == 384
    maps = (torch.randn(2, 192, 4, 6), torch.randn(2, 192, 4, 6))
    head.eval()
    logits = head(maps)
    assert logits.shape == (2, 5, 4, 6)
    expected = head.conv_seg(head.bn(torch.cat(maps, 1)))
    assert torch.allclose(logits, expected)
    one = MODELS.build(dict(type="LinearProbeHead", in_channels=192, num_classes=5, norm_cfg=dict(type="BN")))
    assert one(maps).shape == (2, 5, 4, 6)  # the last map by default


def _segmentor(out_indices):
    from mmseg.registry import MODELS

    return MODELS.build(dict(
        type="EncoderDecoder",
        backbone=dict(type="PEBackbone", model=MODEL, out_indices=out_indices, frozen=False),
        decode_head=dict(type="LinearProbeHead", in_channels=192, num_classes=3, norm_cfg=dict(type="BN"))))


def _layer_decay_wrapper(model, **paramwise_cfg):
    from mmengine.optim import build_optim_wrapper

    return build_optim_wrapper(model, dict(
        optimizer=dict(type="AdamW", lr=1.0, weight_decay=0.05), constructor="PELayerDecayOptimizerConstructor",
        paramwise_cfg=dict(decay_rate=0.5, **paramwise_cfg)))


def test_layer_decay_groups():
    model = _segmentor(out_indices=(-1,))
    model.backbone.encoder.transformer.resblocks[0].requires_grad_(False)
    wrapper = _layer_decay_wrapper(model)  # over 12 layers: the backbone's blocks
    found = {id(p): (g["lr"], g["weight_decay"]) for g in wrapper.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    expect = {
        "backbone.encoder.conv1.weight": (0.5**13, 0.05),
        "backbone.encoder.positional_embedding": (0.5**13, 0.0),
        "backbone.encoder.transformer.resblocks.4.mlp.c_fc.weight": (0.5**8, 0.05),
        "backbone.encoder.transformer.resblocks.11.ln_1.weight": (0.5**1, 0.0),
        "decode_head.conv_seg.weight": (1.0, 0.05),
        "decode_head.conv_seg.bias": (1.0, 0.0),
    }
    for name, value in expect.items():
        assert found[id(named[name])] == pytest.approx(value), name
    frozen = named["backbone.encoder.transformer.resblocks.0.attn.in_proj_weight"]
    assert id(frozen) not in found


def test_layer_decay_depth_is_the_built_backbones():
    model = _segmentor(out_indices=(1, 4))  # blocks after 4 are dropped: 5 layers
    assert model.backbone.encoder.num_blocks == 5
    wrapper = _layer_decay_wrapper(model)
    found = {id(p): g["lr"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert found[id(named["backbone.encoder.conv1.weight"])] == pytest.approx(0.5**6)
    assert found[id(named["backbone.encoder.transformer.resblocks.4.mlp.c_fc.weight"])] == pytest.approx(0.5)
    assert found[id(named["decode_head.conv_seg.weight"])] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="read from the model's PE backbone"):
        _layer_decay_wrapper(model, num_layers=12)


def test_checkpoints_with_code_are_refused(tmp_path):
    from mmengine.runner import CheckpointLoader

    from pe_dense.models import CheckpointError

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {}, "x": Payload()}, f)
    with pytest.raises(CheckpointError, match="refusing|not a torch checkpoint"):
        CheckpointLoader.load_checkpoint(str(evil))
    class Attribute:  # what HistoryBuffer's pickled methods look like, asking for something else
        def __reduce__(self):
            import numpy as np

            return (getattr, (np.ndarray, "tofile"))

    sneaky = tmp_path / "sneaky.pth"
    torch.save({"state_dict": {}, "methods": [Attribute()]}, sneaky)
    with pytest.raises(CheckpointError, match="refusing to load"):
        CheckpointLoader.load_checkpoint(str(sneaky))
    with pytest.raises(CheckpointError, match="pickle files"):
        CheckpointLoader.load_checkpoint(str(tmp_path / "model.pkl"))
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"iter": 3, "dataset_meta": {"classes": ("a",)}}}, good)
    loaded = CheckpointLoader.load_checkpoint(str(good))
    assert loaded["meta"]["iter"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.ones(2))
