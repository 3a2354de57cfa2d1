"""``--encoder timm:NAME`` in features, viz and track: the saved features are timm's own, from timm's own
preprocessing; the tracker runs on a timm model; a bad --encoder or a size off its patch exits 2 with nothing
written."""

import json

import numpy as np
import pytest
import torch

from pe_dense.cli import main
from pe_dense.models import build_encoder, save_state_dict
from pe_dense.models.timm_encoder import checkpoint_state

pytestmark = pytest.mark.suite("timm")
DINOV2 = "timm:vit_small_patch14_dinov2"


@pytest.fixture(scope="module")
def dinov2_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "dinov2_s14.safetensors"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        save_state_dict(checkpoint_state(build_encoder(DINOV2)), path)
    return path


def test_features_are_timms_from_timms_preprocessing(dinov2_weights, tmp_path):
    from timm.data import create_transform, resolve_data_config

    from pe_dense.data import sample_image

    out = tmp_path / "out"
    from pe_dense import FeatureStore

    assert main(["features", "sample:astronaut", "--encoder", DINOV2, "--weights", str(dinov2_weights),
                 "--size", "56", "--layers", "-2", "--workers", "0", "--out", str(out)]) == 0
    store = FeatureStore(out)
    saved = store["sample:astronaut"]["layer_-2"].numpy()
    assert saved.shape == (384, 4, 4)
    assert store.manifest["model"] == DINOV2
    data = resolve_data_config({}, model=build_encoder(DINOV2, dinov2_weights).model)
    assert store.manifest["preprocessing"]["mean"] == list(data["mean"])
    # the reference: timm's eval transform of the (square) sample at 56 px, then timm's forward_intermediates
    model = build_encoder(DINOV2, dinov2_weights).model
    data = {**resolve_data_config({}, model=model), "input_size": (3, 56, 56), "crop_pct": 1.0}
    with torch.no_grad():
        expected = model.forward_intermediates(create_transform(**data)(sample_image("astronaut"))[None],
                                               indices=[10], intermediates_only=True)[0][0]
    np.testing.assert_allclose(saved, expected.numpy(), atol=1e-4)


def test_track_runs_on_a_timm_model(dinov2_weights, tmp_path):
    from pe_dense.data.moving_shapes import write_moving_shapes
    from pe_dense.tracking import DavisLayout

    davis = write_moving_shapes(tmp_path / "davis", num_frames=3, size=(56, 70), seed=3)
    layout = DavisLayout(davis)
    sequence = layout.sequences()[0]
    out = tmp_path / "track"
    assert main(["track", str(layout.frames_dir(sequence)), "--mask", str(layout.annotations(sequence)[0]),
                 "--encoder", DINOV2, "--weights", str(dinov2_weights), "--short-side", "56", "--topk", "2",
                 "--radius", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    assert json.loads((out / "track.json").read_text())["model"] == DINOV2


@pytest.mark.parametrize("encoder, size, message", [
    ("vit_small_patch14_dinov2", "56", "expected timm:NAME"),
    ("timm:resnet18", "56", "timm:resnet18 is not a plain ViT"),
    ("timm:vit_small_patch14_dinov7", "56", "unknown timm model"),
    (DINOV2, "64", f"input size 64x64 is not a positive multiple of {DINOV2}'s patch size 14"),
])
def test_a_bad_encoder_or_size_exits_2_with_nothing_written(encoder, size, message, tmp_path, capsys):
    out = tmp_path / "out"
    try:
        status = main(["viz", "sample:astronaut", "--encoder", encoder, "--size", size, "--out", str(out)])
    except SystemExit as e:  # argparse's own exit, for a malformed option
        status = e.code
    assert status == 2 and message in capsys.readouterr().err and not out.exists()


def test_attention_maps_of_a_timm_model_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["viz", "sample:astronaut", "--encoder", DINOV2, "--size", "56", "--mode", "attention",
                 "--out", str(out)]) == 2
    assert "--mode attention reads PE's own blocks" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ValueError, match="attention maps are read from PE's own blocks"):
        from pe_dense.models.attention_maps import attention_weights

        with pytest.warns(UserWarning, match="RANDOM weights"):
            encoder = build_encoder(DINOV2)
        attention_weights(encoder, torch.zeros(1, 3, 28, 28), -1)
