"""PE as a detectron2 backbone: shapes and strides, the released backbone code's outputs, lr decay."""

import importlib.util

import pytest
import torch
from conftest import _official_source, randomize_

pytestmark = pytest.mark.suite("detectron2")

MODEL = "PE-Spatial-T16-512"
WINDOWED = dict(window_size=8, global_blocks=(2, 5, 8, 11), rope_pretrain_grid=32, pos_embed_mode="tile")


@pytest.mark.parametrize("options", [WINDOWED, {}], ids=["windowed", "global"])
def test_backbone_and_feature_pyramid_shapes(options):
    from detectron2.modeling import SimpleFeaturePyramid
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    from pe_dense.integrations.detectron2 import PEBackbone

    backbone = PEBackbone(MODEL, **options)
    assert backbone.output_shape()["last_feat"].channels == 192 and backbone.output_shape()["last_feat"].stride == 16
    x = torch.randn(2, 3, 160, 224)  # not square, not a multiple of the window: padded inside
    assert backbone(x)["last_feat"].shape == (2, 192, 10, 14)
    pyramid = SimpleFeaturePyramid(net=backbone, in_feature="last_feat", out_channels=32,
                                   scale_factors=(4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool(), norm="LN")
    out = pyramid(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (2, 32, 40, 56), "p3": (2, 32, 20, 28), "p4": (2, 32, 10, 14), "p5": (2, 32, 5, 7), "p6": (2, 32, 3, 4)}
    assert {k: s.stride for k, s in pyramid.output_shape().items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    # the encoder's own parameter names, right under the pyramid's "net."
    assert "net.transformer.resblocks.0.attn.in_proj_weight" in pyramid.state_dict()


def test_windowed_blocks_differ_from_global_ones():
    from pe_dense.integrations.detectron2 import PEBackbone

    windowed = randomize_(PEBackbone(MODEL, **WINDOWED), seed=3)
    plain = PEBackbone(MODEL, rope_pretrain_grid=32, pos_embed_mode="tile")
    plain.load_state_dict(windowed.state_dict())
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert not torch.allclose(windowed(x)["last_feat"], plain(x)["last_feat"], atol=1e-3)


@pytest.mark.suite("pe_official_source")
def test_equals_the_released_detection_backbone_code():
    """Same weights in the released ViTDet backbone (perception_models' pev1_det.py) and in ours."""
    from pe_dense.integrations.detectron2 import PEBackbone
    from pe_dense.models import get_config
    from pe_dense.models.checkpoint import adapt_to_model

    spec = importlib.util.spec_from_file_location("pev1_det", _official_source())
    official_code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official_code)
    config = get_config(MODEL)
    global_blocks = (2, 5, 8, 11)
    official = official_code.PEv1_det(
        img_size=256, patch_size=16, embed_dim=config.width, depth=config.depth, num_heads=config.heads,
        mlp_ratio=config.mlp_width / config.width, init_values=config.ls_init_value, pt_hw_seq_len=32,
        window_size=8, window_block_indexes=[i for i in range(config.depth) if i not in global_blocks],
        pretrain_img_size=config.image_size, tile_posemb=True)
    ours = randomize_(PEBackbone(MODEL, **WINDOWED), seed=4)
    # the released layout: (1, 1 + 32*32, C) position table with the class row, no class embedding
    state = {k: v for k, v in ours.state_dict().items()}
    state["positional_embedding"] = state["positional_embedding"][None]
    missing, unexpected = official.load_state_dict(state, strict=False)
    assert unexpected == [] and all("freqs" in k for k in missing)
    reloaded = PEBackbone(MODEL, **WINDOWED)
    reloaded.load_state_dict(adapt_to_model(state, reloaded)[0])
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        expected = official(x)["last_feat"]
        torch.testing.assert_close(reloaded(x)["last_feat"], expected, atol=2e-5, rtol=1e-4)


def test_layer_wise_lr_decay():
    from pe_dense.integrations.detectron2 import pe_lr_decay_rate

    def rate(name):
        return pe_lr_decay_rate(name, lr_decay_rate=0.5, num_layers=12)

    for embedding in ("conv1.weight", "positional_embedding", "ln_pre.weight", "ln_pre.bias"):
        assert rate(f"backbone.net.{embedding}") == 0.5**13
    assert rate("backbone.net.transformer.resblocks.0.attn.in_proj_weight") == 0.5**12
    assert rate("backbone.net.transformer.resblocks.11.mlp.c_fc.bias") == 0.5
    for head in ("backbone.simfp_2.0.weight", "roi_heads.box_predictor.cls_score.weight", "proposal_generator.x"):
        assert rate(head) == 1.0


def test_rope_grid_is_the_models_pretraining_grid_unless_given():
    from pe_dense.integrations.detectron2 import PEBackbone
    from pe_dense.models import get_config

    assert PEBackbone(MODEL, keep_blocks=1).rope_pretrain_grid == get_config(MODEL).pretrain_grid == 32
    assert PEBackbone("PE-Core-B16-224", keep_blocks=1).rope_pretrain_grid == 14
    assert PEBackbone(MODEL, keep_blocks=1, rope_pretrain_grid=16).rope_pretrain_grid == 16
    assert PEBackbone(MODEL, keep_blocks=1, rope_pretrain_grid=None).rope_pretrain_grid is None


def test_optimizer_params_take_the_decay_depth_from_the_model():
    import torch.nn as nn

    from pe_dense.integrations.detectron2 import PEBackbone, pe_backbone_blocks, pe_optimizer_params

    class Detector(nn.Module):
        def __init__(self, keep_blocks):
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.net = PEBackbone(MODEL, keep_blocks=keep_blocks)
            self.head = nn.Linear(4, 2)

    for keep_blocks in (3, 5):
        model = Detector(keep_blocks)
        assert pe_backbone_blocks(model) == keep_blocks
        groups = pe_optimizer_params(model, base_lr=1.0, lr_decay_rate=0.5, weight_decay_norm=None)
        lr = {id(p): g["lr"] for g in groups for p in g["params"]}
        named = dict(model.named_parameters())
        assert lr[id(named["backbone.net.conv1.weight"])] == 0.5 ** (keep_blocks + 1)
        assert lr[id(named["backbone.net.transformer.resblocks.0.attn.in_proj_weight"])] == 0.5**keep_blocks
        assert lr[id(named[f"backbone.net.transformer.resblocks.{keep_blocks - 1}.mlp.c_fc.bias"])] == 0.5
        assert lr[id(named["head.weight"])] == 1.0
    with pytest.raises(ValueError, match="no PE encoder"):
        pe_backbone_blocks(nn.Sequential(nn.Linear(2, 2)))
