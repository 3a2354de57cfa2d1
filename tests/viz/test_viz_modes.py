"""``pe-dense viz`` attention, norms and foreground modes, guided upsampling and --stride: the files are
the library's results, and bad combinations exit 2 writing nothing."""

import json

import numpy as np
import pytest
from PIL import Image

from pe_dense.cli import main
from pe_dense.data import sample_image
from pe_dense.models import build_encoder, preprocess
from pe_dense.models.attention_maps import attention_map
from pe_dense.models.inference import extract_layers
from pe_dense.viz import PCAColorizer, colors_to_image
from pe_dense.viz.foreground import foreground_mask
from pe_dense.viz.guided_upsampling import to_pixels
from pe_dense.viz.token_norms import outlier_tokens, token_norms

MODEL = "PE-Spatial-T16-512"


@pytest.fixture(scope="module")
def encoder(t16_weights):
    """The model the command runs, built once for the references."""
    return build_encoder(MODEL, t16_weights)


def _viz(tmp_path, weights, *args):
    out = tmp_path / "out"
    assert main(["viz", "sample:chelsea", "--model", MODEL, "--weights", str(weights), "--size", "64", *args,
                 "--out", str(out)]) == 0
    return out, json.loads((out / "viz.json").read_text())


def test_attention_of_the_class_token_per_block(tmp_path, t16_weights, encoder):
    out, manifest = _viz(tmp_path, t16_weights, "--mode", "attention", "--layers", "-1,2")
    assert manifest["images"][0] == {
        "name": "chelsea", "pictures": ["chelsea_block11_attention.png", "chelsea_block2_attention.png"],
        "files": ["chelsea_block11_heads.png", "chelsea_block11_attention.npy", "chelsea_block2_heads.png",
                  "chelsea_block2_attention.npy"], "sweep": "chelsea_attention.png"}
    batch = preprocess(sample_image("chelsea"), 64)[None]
    for block in (11, 2):
        expected = attention_map(encoder, batch, block)[0]
        np.testing.assert_array_equal(np.load(out / f"chelsea_block{block}_attention.npy"), expected.numpy())
    assert Image.open(out / "chelsea_block11_attention.png").size == sample_image("chelsea").size


def test_attention_of_a_query_point(tmp_path, t16_weights, encoder):
    out, _ = _viz(tmp_path, t16_weights, "--mode", "attention", "--point", "10,250")  # 451x300: token (3, 0)
    expected = attention_map(encoder, preprocess(sample_image("chelsea"), 64)[None], -1, query=(3, 0))[0]
    np.testing.assert_array_equal(np.load(out / "chelsea_block11_attention.npy"), expected.numpy())


def test_norms_on_a_stitched_grid(tmp_path, t16_weights, encoder):
    out, manifest = _viz(tmp_path, t16_weights, "--mode", "norms", "--stride", "8")
    assert manifest["stride"] == 8
    (features,) = extract_layers(encoder, [sample_image("chelsea")], size=64, layers=[-1], stride=8)
    norms = np.load(out / "chelsea_block11_norms.npy")
    assert norms.shape == (8, 8)
    np.testing.assert_array_equal(norms, token_norms(features[0]).numpy())
    np.testing.assert_array_equal(np.load(out / "chelsea_block11_outliers.npy"), outlier_tokens(norms).numpy())


def test_foreground_fit_from_the_first_component(tmp_path, t16_weights, encoder):
    out, manifest = _viz(tmp_path, t16_weights, "--fit", "foreground", "--upsample", "guided")
    assert manifest["images"][0]["files"] == ["chelsea_block11_mask.png"] and manifest["upsample"] == "guided"
    image = sample_image("chelsea")
    (features,) = extract_layers(encoder, [image], size=64, layers=[-1])
    tokens = foreground_mask(features[0]).numpy()
    pixels = to_pixels(tokens.astype(np.float32), image, "guided") > 0.5
    written_mask = np.asarray(Image.open(out / "chelsea_block11_mask.png"))
    np.testing.assert_array_equal(written_mask, pixels.astype(np.uint8) * 255)
    colorizer = PCAColorizer("rgb").fit(features[0], tokens)
    colors = colorizer.colors(to_pixels(colorizer.project(features[0]), image, "guided")) * pixels[..., None]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "chelsea_block11_pca.png")),
                                  np.asarray(colors_to_image(colors)))


def test_foreground_fit_from_a_user_mask(tmp_path, t16_weights):
    mask = np.zeros((30, 45), dtype=np.uint8)  # a tenth of chelsea's size: the left half is foreground
    mask[:, :22] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out, _ = _viz(tmp_path, t16_weights, "--fit", "foreground", "--mask", str(tmp_path / "mask.png"))
    written_mask = np.asarray(Image.open(out / "chelsea_block11_mask.png")) > 0
    expected = np.asarray(Image.fromarray(mask).resize((451, 300), Image.NEAREST)) > 0
    np.testing.assert_array_equal(written_mask, expected)
    picture = np.asarray(Image.open(out / "chelsea_block11_pca.png"))
    assert (picture[~written_mask] == 0).all() and picture[written_mask].any()


@pytest.mark.parametrize("args, message", [
    (["--mode", "norms", "--point", "1,1"], "a point chooses the query token of modes corr and attention"),
    (["--mode", "corr", "--fit", "foreground"], "fit chooses the tokens of a PCA (modes pca and lch)"),
    (["--mask", "m.png"], "a mask gives the foreground of fit 'foreground'"),
    (["--mode", "attention", "--stride", "8"], "attention maps show one pass of the model: no stride"),
    (["--fit", "foreground", "--mask", "missing.png"], "image 'missing.png' does not exist"),
])
def test_bad_combinations_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["viz", "sample:chelsea", "--model", MODEL, "--size", "64", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

