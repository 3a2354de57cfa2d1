"""The pe-dense command, run in-process and once through the installed entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pe_dense import FeatureStore
from pe_dense.cli import main
from pe_dense.models import build_encoder, read_checkpoint

MODEL = "PE-Spatial-T16-512"


def test_features_on_samples_files_and_folders(tmp_path, t16_weights, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (200, 120), (200, 30, 30)).save(folder / "red.png")
    Image.new("RGB", (90, 160), (20, 200, 30)).save(folder / "green.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code = main(["features", "sample:coffee", str(folder), str(folder / "red.png"), "--model", MODEL,
                 "--weights", str(t16_weights), "--layers", "-4", "--size", "256x384", "--batch-size", "2",
                 "--workers", "0", "--out", str(out)])
    assert code == 0
    assert "RANDOM" not in capsys.readouterr().err
    store = FeatureStore(out)
    assert list(store) == ["sample:coffee", f"{folder.as_posix()}/green.jpg", f"{folder.as_posix()}/red.png"]
    assert store.manifest["layers"] == [-4] and store.manifest["preprocessing"]["size"] == [256, 384]
    coffee = store["sample:coffee"]["layer_-4"]
    assert coffee.shape == (192, 16, 24) and coffee.dtype == torch.float32
    # the stored features are exactly the model's, at the requested layer and size
    from pe_dense.data import sample_image
    from pe_dense.models import preprocess

    model = build_encoder(MODEL, t16_weights)
    with torch.no_grad():
        expected = model.dense_features(preprocess(sample_image("coffee"), (256, 384))[None], layer=-4)[0]
    torch.testing.assert_close(coffee, expected, atol=1e-5, rtol=0)
    assert not list(out.rglob(".*partial*"))


def test_random_weights_are_announced_loudly(tmp_path, capsys):
    assert main(["features", "sample:astronaut", "--model", MODEL, "--size", "64", "--out", str(tmp_path)]) == 0
    assert "RANDOM weights" in capsys.readouterr().err
    assert json.loads((tmp_path / "features.json").read_text())["weights"] == "random"


@pytest.mark.parametrize("args, message", [
    (["missing.jpg"], "input 'missing.jpg' does not exist"),
    (["sample:lena"], "unknown sample image 'lena'"),
    (["sample:coffee", "--size", "100"], "not a positive multiple of the patch size 16"),
    (["sample:coffee", "--size", "12x"], "size must be N or HxW"),
    (["sample:coffee", "--layers", "12"], "layer 12 is out of range"),
    (["sample:coffee", "--model", "PE-Spatial-Q16-512"], "unknown PE model"),
    (["sample:coffee", "--weights", "nope.pt"], "'nope.pt' does not exist"),
])
def test_bad_input_exits_2_with_a_message_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    argv = ["features", *args, "--out", str(out)]
    if "--model" not in args:
        argv += ["--model", MODEL]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # not even an empty folder


def test_an_unreadable_image_stops_a_strict_run_cleanly(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["features", str(bad), "--model", MODEL, "--size", "64", "--strict", "--workers", "0",
                 "--out", str(tmp_path / "o")]) == 2
    assert "cannot read" in capsys.readouterr().err and not (tmp_path / "o" / "features.json").exists()


def test_nan_weights_exit_2_naming_the_checkpoint_before_any_output(tmp_path, t16_weights, capsys):
    state = torch.load(t16_weights, weights_only=True)
    state["transformer.resblocks.0.attn.in_proj_weight"].fill_(float("nan"))
    nan = tmp_path / "nan.pt"
    torch.save(state, nan)
    out = tmp_path / "out"
    assert main(["features", "sample:coffee", "--model", MODEL, "--weights", str(nan), "--size", "64",
                 "--out", str(out)]) == 2
    assert f"{nan} holds NaN or infinite values" in capsys.readouterr().err
    assert not out.exists()


def test_convert_round_trip_and_refusal_to_overwrite(tmp_path, t16_weights, capsys):
    timm_file, back = tmp_path / "timm.safetensors", tmp_path / "back.pt"
    assert main(["convert", str(t16_weights), str(timm_file), "--to", "timm"]) == 0
    assert "patch_embed.proj.weight" in read_checkpoint(timm_file)
    assert main(["convert", str(timm_file), str(back)]) == 0
    original = read_checkpoint(t16_weights)
    assert all(torch.equal(read_checkpoint(back)[k], v) for k, v in original.items())
    assert main(["convert", str(t16_weights), str(back)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["convert", str(t16_weights), str(tmp_path / "missing" / "x.pt")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert main(["convert", str(t16_weights), str(tmp_path), "--force"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.pt", "timm.safetensors"]


def test_models_lists_every_config(capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("PE-Core-G14-448", "PE-Lang-L14-448-Tiling", MODEL))


ENTRY_POINT = Path(sys.executable).parent / "pe-dense"


@pytest.mark.skipif(not ENTRY_POINT.exists(), reason="pe_dense is not pip-installed in this environment")
def test_installed_entry_point(tmp_path):
    result = subprocess.run([str(ENTRY_POINT), "features", "sample:chelsea", "--model", MODEL, "--size", "64",
                             "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "sample:chelsea" in FeatureStore(tmp_path) and "RANDOM weights" in result.stderr


def test_batch_size_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "sample:coffee", "--model", MODEL, "--batch-size", "0", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("command, options", [
    ("features", ["--batch-size", "--precision", "--device"]),
    ("viz", ["--layers", "--mode", "--fit"]),
    ("track", ["--short-side", "--context", "--radius", "--topk", "--temperature"]),
    ("detect", ["--score-threshold"]),
    ("convert", ["--to"]),
])
def test_help_shows_the_defaults(command, options, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for option in options:
        section = text.split(f" {option} ", 1)[1].split(" --", 1)[0]
        assert "default" in section, (option, section)


@pytest.mark.parametrize("command, manifest", [("viz", "viz.json")])
def test_results_are_replaced_only_with_force(tmp_path, t16_weights, capsys, command, manifest):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # files not named after the run's images are not in the way
    argv = [command, "sample:coffee", "--model", MODEL, "--weights", str(t16_weights), "--size", "64",
            "--out", str(out)]
    assert main(argv) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert manifest in before
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds results this run would replace" in err and manifest in err and "--force" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    assert main([*argv, "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine"


def test_out_naming_a_file_is_refused_before_any_work(tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("not a folder")
    assert main(["features", "sample:coffee", "--model", MODEL, "--size", "64", "--out", str(target)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and target.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_out_is_refused_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["features", "sample:coffee", "--model", MODEL, "--size", "64", "--out",
                     str(locked / "out")]) == 2
        assert "permission denied" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("device, message", [("gpu0", "is not a device"), ("cuda:99", "CUDA device")])
def test_a_device_this_machine_lacks_is_a_usage_error(tmp_path, capsys, device, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "sample:coffee", "--model", MODEL, "--device", device, "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("precision, native_bf16, message", [
    ("fp16", True, "fp16 is not supported on the CPU"),
    ("bf16", False, "no native bf16 arithmetic"),
])
def test_a_precision_slower_than_fp32_on_this_cpu_is_a_usage_error(monkeypatch, tmp_path, capsys, precision,
                                                                    native_bf16, message):
    monkeypatch.setattr("pe_dense.cpu.native_bf16", lambda units: native_bf16)
    out = ["--precision", precision, "--out", str(tmp_path / "o")]
    for argv in (["features", "sample:coffee", "--model", MODEL, *out],
                 ["track", "video.mp4", "--model", MODEL, "--mask", "m.png", *out]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command, hint", [("features", ""), ("track", "--resume")])
def test_ctrl_c_says_interrupted(monkeypatch, tmp_path, capsys, command, hint):
    import pe_dense.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.COMMANDS[command], "run", interrupted)
    argv = {"features": ["features", "sample:coffee", "--model", MODEL, "--out", str(tmp_path)],
            "track": ["track", "video.mp4", "--mask", "m.png", "--model", MODEL, "--out", str(tmp_path)]}[command]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"pe-dense {command}: interrupted" in err and hint in err


def test_an_image_over_the_pixel_limit_says_how_to_allow_it(monkeypatch, tmp_path, capsys):
    from PIL import Image as PILImage

    big = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 10000 pixels is over twice the limit
    argv = ["features", str(big), "--model", MODEL, "--size", "64", "--workers", "0", "--force", "--out",
            str(tmp_path / "o")]
    assert main(argv) == 1  # recorded as a failure, and the run goes on
    [failure] = FeatureStore(tmp_path / "o").failures
    reason = failure["reason"]
    assert "too large to open safely" in reason and "10000 pixels" in reason and "PE_DENSE_MAX_IMAGE_PIXELS" in reason
    monkeypatch.setenv("PE_DENSE_MAX_IMAGE_PIXELS", "0")
    assert main(argv) == 0
    assert PILImage.MAX_IMAGE_PIXELS == 1000  # the limit is back


def test_a_huge_input_size_is_announced_before_the_work(monkeypatch, tmp_path, capsys):
    from pe_dense.cli import common, features

    def stop(args):  # the warning comes before the model is built
        raise common.UsageError("stopped")

    monkeypatch.setattr(features, "build_encoder", stop)
    assert main(["features", "sample:coffee", "--model", MODEL, "--size", "8192", "--batch-size", "1",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "8192x8192 is 262144 tokens, 256x the 1024 PE-Spatial-T16-512 was trained at" in err
    assert "65536x the attention work" in err and "1.5 GiB" in err
    assert main(["features", "sample:coffee", "--model", MODEL, "--size", "1024", "--out", str(tmp_path / "o")]) == 2
    assert "NOTE" not in capsys.readouterr().err


def test_lists_are_written_with_commas_and_the_earlier_spaces_still_read_with_a_note(capsys):
    from pe_dense.cli import build_parser

    parser = build_parser()
    for layers in (["-1,3"], ["3,-1"], ["-4,-1"]):
        args = parser.parse_args(["viz", "sample:coffee", "--model", MODEL, "--out", "o", "--layers", *layers])
        assert args.layers == [int(v) for v in layers[0].split(",")]
    assert not capsys.readouterr().err
    args = parser.parse_args(["export", MODEL, "--format", "onnx", "--size", "64", "--out", "o.onnx",
                              "--layers", "-1", "5"])
    assert args.layers == [-1, 5]
    note = capsys.readouterr().err
    assert "--layers -1 5 is deprecated" in note and "write --layers -1,5" in note
    assert parser.parse_args(["probe", "--model", MODEL, "--out", "o", "--layers", "1,-1"]).layers == [1, -1]
    with pytest.raises(SystemExit):
        parser.parse_args(["viz", "sample:coffee", "--model", MODEL, "--out", "o", "--layers", "1,x"])
    assert "argument --layers: expected LAYER,..., got '1,x'" in capsys.readouterr().err


def test_pe_dense_debug_shows_the_traceback_of_an_error(monkeypatch, tmp_path, capsys):
    argv = ["features", "sample:coffee", "--model", MODEL, "--layers", "12", "--size", "64", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "layer 12 is out of range" in err and "Traceback" not in err
    monkeypatch.setenv("PE_DENSE_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "layer_index" in err
    assert err.strip().splitlines()[-1].startswith("pe-dense features: error: layer 12 is out of range")


def test_python_m_pe_dense_is_the_command():
    result = subprocess.run([sys.executable, "-m", "pe_dense", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("pe-dense ")
