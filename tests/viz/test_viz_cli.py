"""``pe-dense viz``: the pictures are exactly the library's, and bad input writes nothing."""

import json

import numpy as np
import pytest
from PIL import Image

from pe_dense.cli import main
from pe_dense.data import sample_image
from pe_dense.models import build_encoder
from pe_dense.models.inference import extract_layers
from pe_dense.viz import PCAColorizer, colors_to_image, token_center

MODEL = "PE-Spatial-T16-512"


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    sample_image("astronaut").resize((150, 110)).save(path)
    return path


def test_pca_sweep_with_a_shared_fit_gives_the_library_pictures(tmp_path, t16_weights, photo):
    out = tmp_path / "out"
    assert main(["viz", "sample:chelsea", str(photo), "--model", MODEL, "--weights", str(t16_weights),
                 "--layers", "-1,3", "--mode", "lch", "--fit", "first", "--size", "128", "--out", str(out)]) == 0
    manifest = json.loads((out / "viz.json").read_text())
    assert manifest["mode"] == "lch" and manifest["fit"] == "first" and manifest["layers"] == [-1, 3]
    assert manifest["images"][1] == {"name": "photo", "pictures": ["photo_block11_lch.png", "photo_block3_lch.png"],
                                     "sweep": "photo_lch.png"}
    images = [sample_image("chelsea"), Image.open(photo).convert("RGB")]
    maps = extract_layers(build_encoder(MODEL, t16_weights), images, size=128, layers=[11, 3])
    for layer, batch in zip([11, 3], maps):
        colorizer = PCAColorizer("lch").fit(batch[0])  # --fit first: the first image's PCA for both
        for name, image, features in zip(["chelsea", "photo"], images, batch):
            written = np.asarray(Image.open(out / f"{name}_block{layer}_lch.png"))
            expected = colors_to_image(colorizer.transform(features, size=(image.height, image.width)))
            np.testing.assert_array_equal(written, np.asarray(expected))
    sweep = Image.open(out / "photo_lch.png")
    assert sweep.width > 2.5 * sweep.height  # image + two layers side by side


def test_correspondence_of_an_image_with_itself(tmp_path, t16_weights, photo):
    # the query is a token centre, so the best match in the copy is marked at exactly the same place
    x, y = token_center((3, 4), (150, 110), (8, 8))
    out = tmp_path / "out"
    assert main(["viz", str(photo), str(photo), "--model", MODEL, "--weights", str(t16_weights), "--mode", "corr",
                 "--point", f"{x},{y}", "--size", "128", "--out", str(out)]) == 0
    first, second = (np.asarray(Image.open(out / f"{n}_block11_corr.png")) for n in ("photo", "photo_1"))
    assert first.shape == (110, 150, 3)
    np.testing.assert_array_equal(first, second)
    assert not (out / "photo_corr.png").exists()  # one layer: no sweep


@pytest.mark.parametrize("args, message", [
    (["--point", "10,10"], "a point chooses the query token of modes corr and attention"),
    (["--mode", "corr", "--point", "500,10"], "point (500.0, 10.0) is outside the 451x300 image"),
    (["--layers", "-1,12"], "layer 12 is out of range"),
    (["--size", "100"], "not a positive multiple of the patch size 16"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["viz", "sample:chelsea", "--model", MODEL, "--size", "64", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
