"""pe_dense against an independent implementation: timm's vit_pe_* models, at the native resolution.

The same random weights, in the official checkpoint layout, go into pe_dense directly and into timm
through timm's own converter (``timm.models.eva.checkpoint_filter_fn``).
"""

import pytest
import torch
from conftest import randomize_

from pe_dense.models import build_encoder, get_config, list_models, load_weights, official_to_timm

pytestmark = pytest.mark.suite("timm")
NAMES = [n for n in list_models() if not n.endswith("-Tiling")]
# L and G at two blocks: every block is the same code (T, S and B run at full depth), and 24 to 50 blocks at
# their native sizes do not fit the test budget on a CPU
WIDE_DEPTH = 2


def _pair(name):
    import timm
    from timm.models.eva import checkpoint_filter_fn

    config = get_config(name)
    if config.width >= 1024:
        config = config.replace(depth=WIDE_DEPTH)
    ours = randomize_(build_encoder(config))
    official = {f"visual.{k}": v for k, v in ours.state_dict().items()}  # the CLIP checkpoint layout
    extra = {"num_classes": config.output_dim} if config.pool else {}
    theirs = timm.create_model(config.timm_name, pretrained=False, img_size=config.image_size, depth=config.depth,
                               **extra).eval()
    theirs.load_state_dict(checkpoint_filter_fn(official, theirs))
    return config, ours, theirs


@pytest.mark.parametrize("name", NAMES)
def test_features_match_timm_at_native_resolution(name):
    config, ours, theirs = _pair(name)
    batch = 2 if config.width < 768 else 1  # a batch of two where it is cheap
    images = torch.randn(batch, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # timm's forward_features applies ln_post on Core models; the official features are before it.
        tokens = ours.forward_features(images, norm=config.use_ln_post)
        expected = theirs.forward_features(images)
        assert tokens.shape == expected.shape
        assert tokens.abs().mean() > 0.1  # features of real scale, not a degenerate zero
        torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=0)
        if config.pool:
            pooled = ours(images)
            assert pooled.shape == (batch, config.output_dim)
            assert pooled.abs().mean() > 0.1
            torch.testing.assert_close(pooled, theirs(images), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["PE-Core-T16-384", "PE-Spatial-G14-448", "PE-Lang-L14-448"])
def test_our_timm_conversion_matches_timms_own(name):
    from timm.models.eva import checkpoint_filter_fn

    config, ours, theirs = _pair(name)
    official = ours.state_dict()
    converted = official_to_timm(official)
    reference = checkpoint_filter_fn({f"visual.{k}": v for k, v in official.items()}, theirs)
    assert converted.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(converted[key], reference[key], atol=0, rtol=0, msg=key)
    # and a timm state dict loads into pe_dense, giving back the same parameters
    fresh = build_encoder(config)
    load_weights(fresh, theirs.state_dict())
    for key, value in official.items():
        assert torch.equal(fresh.state_dict()[key], value), key
