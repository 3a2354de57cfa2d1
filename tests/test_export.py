"""Exported encoders (docs/export.md) compute what PyTorch computes: ONNX in onnxruntime (CPU) and reloaded
ExportedPrograms, for Spatial T and S and Core T (its CLIP embedding too), at the native size and off it."""

import json

import pytest
import torch
from conftest import randomize_

import pe_dense.export
from pe_dense.cli import main
from pe_dense.export import export_encoder
from pe_dense.models import build_encoder, get_config

pytestmark = pytest.mark.suite("export")  # onnx and onnxruntime are imported in the tests: skipped without them

MODEL = "PE-Spatial-T16-512"
OFF_NATIVE = (128, 192)  # 8 x 12 tokens at patch 16
SUFFIX = {"onnx": ".onnx", "exported-program": ".pt2"}


def _load(path, format):
    """The exported file, run the way a user would: in onnxruntime, or reloaded by torch.export.load."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda images: [torch.from_numpy(out) for out in session.run(None, {"images": images.numpy()})]
    module = torch.export.load(path).module()
    return lambda images: list(module(images))


@pytest.mark.parametrize("format", ["onnx", "exported-program"])
@pytest.mark.parametrize("name", ["PE-Spatial-T16-512", "PE-Spatial-S16-512", "PE-Core-T16-384"])
def test_export_equals_pytorch_at_native_and_off_native_sizes(tmp_path, name, format):
    # four of the twelve blocks: tracing and exporting take time in proportion to the blocks, all alike
    encoder = randomize_(build_encoder(get_config(name).replace(depth=4)), seed=1)
    pooled = encoder.attn_pool is not None
    out = tmp_path / f"encoder{SUFFIX[format]}"
    manifest = export_encoder(encoder, out, format=format, size=OFF_NATIVE, layers=(-1, 1), pooled=pooled,
                              dynamic=True)
    assert [o["name"] for o in manifest["outputs"]] == ["layer_3", "layer_1"] + ["embedding"] * pooled
    assert manifest["check"]["max_abs_diff"] < 1e-4
    run = _load(out, format)
    native = get_config(name).image_size
    for batch, size in [(1, (native, native)), (2, OFF_NATIVE)]:
        images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(size[1]))
        with torch.no_grad():
            expected = encoder.dense_features_at(images, (-1, 1)) + ([encoder(images)] if pooled else [])
            got = run(images)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert e.abs().max() > 0.1  # features of unit scale, so the tolerance means something
            torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def test_command_exports_a_fixed_size_onnx_file_with_its_manifest(tmp_path, t16_weights, monkeypatch, capsys):
    monkeypatch.setenv("PE_DENSE_WEIGHTS", str(t16_weights.parent))  # --weights hub finds the file there
    out = tmp_path / "t16.onnx"
    assert main(["export", MODEL, "--weights", "hub", "--format", "onnx", "--size", "128x192", "--layers", "-10,0",
                 "--out", str(out)]) == 0
    assert "agrees with PyTorch" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "t16.onnx.json").read_text())
    assert manifest["model"] == MODEL and manifest["weights"] == "hub" and manifest["format"] == "onnx"
    assert manifest["input"] == {"name": "images", "shape": ["batch", 3, 128, 192], "dtype": "float32"}
    assert manifest["input_size"] == [128, 192] and manifest["patch_size"] == 16 and not manifest["dynamic"]
    assert manifest["normalisation"]["mean"] == [0.5] * 3 and manifest["normalisation"]["std"] == [0.5] * 3
    assert manifest["layers"] == [-10, 0]
    assert manifest["outputs"] == [
        {"name": "layer_2", "layer": -10, "block": 2, "shape": ["batch", 192, 8, 12]},
        {"name": "layer_0", "layer": 0, "block": 0, "shape": ["batch", 192, 8, 12]},
    ]
    import onnx
    import onnxruntime

    model = onnx.load(out)
    assert not [t.name for t in model.graph.initializer if "resblocks.3." in t.name]  # unused blocks left out
    encoder = build_encoder(MODEL, t16_weights)
    images = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        expected = encoder.dense_features_at(images, (-10, 0))
    run = _load(out, "onnx")
    for got, e in zip(run(images), expected):
        torch.testing.assert_close(got, e, atol=1e-4, rtol=0)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="dimensions"):
        run(torch.randn(1, 3, 128, 128))  # exported for one size only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t16.onnx", "t16.onnx.json"]  # no temporary left over


def test_command_exports_a_dynamic_exported_program(tmp_path, t16_weights):
    out = tmp_path / "t16.pt2"
    assert main(["export", MODEL, "--weights", str(t16_weights), "--format", "exported-program", "--size", "64",
                 "--layers", "1", "--dynamic", "--out", str(out)]) == 0
    manifest = json.loads((tmp_path / "t16.pt2.json").read_text())
    assert manifest["dynamic"] and manifest["input"]["shape"] == ["batch", 3, "height", "width"]
    assert manifest["outputs"][0]["shape"] == ["batch", 192, "height/16", "width/16"]
    encoder, run = build_encoder(MODEL, t16_weights), _load(out, "exported-program")
    for size in [(64, 64), (96, 160)]:
        images = torch.randn(3, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(run(images)[0], encoder.dense_features(images, layer=1), atol=1e-4, rtol=0)


def test_existing_output_is_replaced_only_with_force(tmp_path, t16_weights, capsys):
    out = tmp_path / "t16.onnx"
    out.write_bytes(b"an earlier export")
    argv = ["export", MODEL, "--weights", str(t16_weights), "--format", "onnx", "--size", "64", "--layers", "0",
            "--out", str(out)]
    assert main(argv) == 2
    assert f"{out} exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier export" and sorted(p.name for p in tmp_path.iterdir()) == ["t16.onnx"]
    assert main([*argv, "--force"]) == 0
    import onnx

    assert onnx.load(out).graph.output[0].name == "layer_0"


@pytest.mark.parametrize("args, message", [
    (["--size", "100"], "not a positive multiple of the patch size 16"),
    (["--layers", "12"], "layer 12 is out of range for a 12-block model"),
    (["--layers", "-1,11"], "name the same block twice"),
    (["--pooled"], "has no CLIP embedding to export (only PE-Core models do)"),
    (["--weights", "nope.pt"], "'nope.pt' does not exist"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    argv = ["export", MODEL, "--format", "onnx", "--size", "64", "--out", str(tmp_path / "t16.onnx"), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_dynamic_sizes_the_exporter_cannot_keep_say_to_export_per_size(tmp_path, tiny_config):
    # A windowed (ViTDet) tower pads its grid to whole windows: the traced graph depends on the size.
    encoder = build_encoder(tiny_config, window_size=4, drop_cls_token=True)
    with pytest.raises(ValueError, match="export once per input size instead"):
        export_encoder(encoder, tmp_path / "vitdet.pt2", format="exported-program", size=(80, 96), layers=(0,),
                       dynamic=True)
    assert list(tmp_path.iterdir()) == []
    assert not encoder.export_mode and encoder.num_blocks == 2  # the encoder is given back as it was
    export_encoder(encoder, tmp_path / "vitdet.pt2", format="exported-program", size=(80, 96), layers=(0,))
    images = torch.randn(2, 3, 80, 96)
    with torch.no_grad():
        got = _load(tmp_path / "vitdet.pt2", "exported-program")(images)[0]
        torch.testing.assert_close(got, encoder.dense_features(images, layer=0), atol=1e-4, rtol=0)


def test_an_export_that_disagrees_with_pytorch_is_not_written(tmp_path, tiny_config, monkeypatch):
    load = pe_dense.export.load_export
    monkeypatch.setattr(pe_dense.export, "load_export",
                        lambda path, format: lambda images: [out + 1 for out in load(path, format)(images)])
    with pytest.raises(ValueError, match="the exported file differs from PyTorch by 1 at 64x64"):
        export_encoder(build_encoder(tiny_config), tmp_path / "tiny.pt2", format="exported-program", size=(64, 64),
                       layers=(0,))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("format, dtype", [("onnx", "fp16"), ("exported-program", "bf16")])
def test_reduced_precision_exports_stay_within_their_tolerance(tmp_path, tiny_config, format, dtype):
    encoder = randomize_(build_encoder(tiny_config), seed=2)
    out = tmp_path / f"encoder{SUFFIX[format]}"
    manifest = export_encoder(encoder, out, format=format, size=(64, 96), layers=(-1,), dtype=dtype)
    assert manifest["dtype"] == dtype and manifest["input"]["dtype"] == "float32"
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = encoder.dense_features(images)
    (got,) = _load(out, format)(images)
    assert got.dtype == torch.float32
    gap = (got - expected).abs().max().item()
    tolerance = pe_dense.export.TOLERANCE[dtype] * expected.abs().max().item()
    assert 0 < gap <= tolerance  # reduced precision: not bit-identical, within the stated bound
    assert manifest["check"]["tolerance"] == pe_dense.export.TOLERANCE[dtype]


def test_a_precision_onnxruntime_cannot_run_here_is_refused(tmp_path, capsys):
    argv = ["export", MODEL, "--format", "onnx", "--size", "64", "--dtype", "bf16", "--out", str(tmp_path / "m.onnx")]
    assert main(argv) == 2
    assert "cannot run bf16 convolutions on this CPU" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
