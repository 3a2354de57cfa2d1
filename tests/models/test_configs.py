import pytest

from pe_dense.models import MODEL_CONFIGS, UnknownModelError, get_config, list_models, stage_end_blocks

# docs/models.md: patch, width, depth, heads, mlp width, cls token, layerscale, output dim, image
TABLE = {
    "PE-Core-T16-384": (16, 192, 12, 3, 768, True, None, 512, 384),
    "PE-Core-S16-384": (16, 384, 12, 6, 1536, True, None, 512, 384),
    "PE-Core-B16-224": (16, 768, 12, 12, 3072, True, None, 1024, 224),
    "PE-Core-L14-336": (14, 1024, 24, 16, 4096, True, None, 1024, 336),
    "PE-Core-G14-448": (14, 1536, 50, 16, 8960, False, None, 1280, 448),
    "PE-Lang-L14-448": (14, 1024, 23, 16, 4096, True, 0.1, None, 448),
    "PE-Lang-G14-448": (14, 1536, 47, 16, 8960, False, 0.1, None, 448),
    "PE-Spatial-T16-512": (16, 192, 12, 3, 768, True, None, None, 512),
    "PE-Spatial-S16-512": (16, 384, 12, 6, 1536, True, None, None, 512),
    "PE-Spatial-B16-512": (16, 768, 12, 12, 3072, True, None, None, 512),
    "PE-Spatial-L14-448": (14, 1024, 24, 16, 4096, True, None, None, 448),
    "PE-Spatial-G14-448": (14, 1536, 50, 16, 8960, False, 0.1, None, 448),
}


@pytest.mark.parametrize("name", TABLE)
def test_configs_match_the_published_table(name):
    c = get_config(name)
    assert (c.patch_size, c.width, c.depth, c.heads, c.mlp_width, c.use_cls_token, c.ls_init_value, c.output_dim,
            c.image_size) == TABLE[name]
    assert c.use_ln_post == (c.family == "core") and (c.pool == "attn") == (c.family == "core")


def test_every_released_name_is_known_including_tiling_aliases():
    expected = set(TABLE) | {"PE-Lang-L14-448-Tiling", "PE-Lang-G14-448-Tiling"}
    assert set(list_models()) == expected == set(MODEL_CONFIGS)
    assert get_config("PE-Lang-G14-448-Tiling").replace(name="PE-Lang-G14-448") == get_config("PE-Lang-G14-448")
    assert list_models("spatial") == [n for n in TABLE if "Spatial" in n]


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownModelError, match="Did you mean PE-Spatial-B16-512"):
        get_config("PE-Spatial-B16-51")
    with pytest.raises(ValueError, match="unknown PE model 'resnet50'"):
        get_config("resnet50")


def test_inconsistent_configs_are_refused():
    base = get_config("PE-Spatial-T16-512")
    with pytest.raises(ValueError, match="not divisible"):
        base.replace(heads=5)
    with pytest.raises(ValueError, match="not a multiple of patch"):
        base.replace(image_size=500)


def test_pretrain_grid_is_the_position_tables_side():
    assert get_config("PE-Spatial-G14-448").pretrain_grid == 32 and get_config("PE-Core-B16-224").pretrain_grid == 14
    assert get_config("PE-Spatial-T16-512").pretrain_grid == 32 and get_config("PE-Core-L14-336").pretrain_grid == 24


def test_stage_end_blocks_are_the_released_ones_for_g_and_evenly_spaced_otherwise():
    assert stage_end_blocks("PE-Spatial-G14-448") == stage_end_blocks("PE-Core-G14-448") == (12, 24, 36, 49)
    assert stage_end_blocks("PE-Spatial-L14-448") == (5, 11, 17, 23)
    assert stage_end_blocks(get_config("PE-Spatial-B16-512")) == (2, 5, 8, 11)
    assert stage_end_blocks("PE-Lang-G14-448") == (10, 22, 34, 46)  # 47 blocks: no released split
