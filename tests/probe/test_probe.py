"""``pe-dense probe``: the smoke probe of an aligned student makes the table and resumes after an
interruption (a finished task is not run again, the interrupted one continues from its checkpoint); a timm
encoder runs the same protocols and --compare merges finished runs into one table; bad inputs stop it before
anything is written; layers reach the heads; a layer sweep gives rows per layer and a plot; --launcher reaches
mmengine."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from pe_dense.cli import main
from pe_dense.models import build_encoder, encoder_config, get_config, save_state_dict

pytestmark = pytest.mark.suite("mmseg")

ROOT = Path(__file__).resolve().parents[2]
MODEL = "PE-Spatial-T16-512"
TIMM = "timm:vit_tiny_patch16_dinov3_qkvb"  # DINOv3's layout (class token, registers, RoPE) at PE-T's cost


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """tools/align_net.py's exported student: the tiny recipe, two steps, feature teacher only."""
    from pe_dense.align.config import load_config
    from pe_dense.align.trainer import AlignTrainer
    from pe_dense.data.shapes import render_shapes_image

    images = tmp_path_factory.mktemp("images")
    for i in range(8):
        Image.fromarray(render_shapes_image(i, seed=3, size=64)[0]).save(images / f"{i}.png")
    output = tmp_path_factory.mktemp("align")
    config = load_config(ROOT / "configs/align/tiny.py", [
        "student.image_size=64", "sam.family=None", "train.iters=2", "train.batch_size=4", "data.num_workers=0",
        f"data.root='{images}'", f"train.output_dir='{output}'"])
    return AlignTrainer(config).train()


def test_smoke_probe_of_an_aligned_student_resumes_after_an_interruption(student, tmp_path, monkeypatch, capsys):
    from mmengine.runner import IterBasedTrainLoop

    out = tmp_path / "probe"
    args = ["probe", "--smoke", "--model", MODEL, "--weights", str(student), "--out", str(out)]
    real_run_iter = IterBasedTrainLoop.run_iter

    def interrupted_in_depth(self, batch):
        if Path(self.runner.work_dir).name == "nyu" and self._iter == 7:  # its checkpoint is at iteration 5
            raise KeyboardInterrupt  # as Ctrl-C
        return real_run_iter(self, batch)

    monkeypatch.setattr(IterBasedTrainLoop, "run_iter", interrupted_in_depth)
    assert main(args) == 130
    assert "interrupted (run the same command again to continue)" in capsys.readouterr().err
    nyu = out / "nyu"
    assert (out / "ade20k/result.json").is_file() and (nyu / "iter_5.pth").is_file()
    assert not (nyu / "result.json").exists() and not (out / "davis").exists() and not (out / "probe.json").exists()
    ade20k_result = (out / "ade20k/result.json").read_text()

    monkeypatch.undo()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ade20k, layers 11: finished earlier" in printed
    assert (out / "ade20k/result.json").read_text() == ade20k_result  # not trained again
    assert any("resumed epoch: 0, iter: 5" in log.read_text() for log in nyu.glob("*/*.log"))
    summary = json.loads((out / "probe.json").read_text())
    assert summary["weights"] == str(student.resolve()) and not (out / "random_weights.pt").exists()
    rows = {row["task"]: row for row in summary["rows"]}
    assert list(rows) == ["ade20k", "nyu", "davis"]
    assert rows["nyu"]["resumed"] == "iter_5.pth" and rows["ade20k"]["resumed"] is None
    assert rows["ade20k"]["layers"] == [11] and rows["nyu"]["layers"] == [2, 5, 8, 11]
    for row in rows.values():
        assert math.isfinite(row["value"]) and row["value"] == row["metrics"][
            {"ade20k": "mIoU", "nyu": "rmse", "davis": "J&F-Mean"}[row["task"]]]
    assert rows["ade20k"]["published"] == 27.6 and rows["davis"]["published"] == 55.0
    assert rows["davis"]["difference"] == pytest.approx(rows["davis"]["value"] - 55.0)
    assert rows["nyu"]["published"] is None and rows["nyu"]["difference"] is None
    table = (out / "probe.md").read_text()
    assert table in printed and "depth results are not public" in table
    assert [row[2] for row in _table_rows(table)] == ["task", "ade20k", "nyu", "davis"]
    assert len((out / "probe.csv").read_text().splitlines()) == 4
    assert summary["protocol"]["davis"]["resolution"].startswith("short side 240 px")
    assert summary["protocol"]["ade20k"]["schedule"].endswith("10 iterations at batch 8")
    assert summary["parameters"] == sum(p.numel() for p in build_encoder(MODEL).parameters())
    assert summary["throughput"]["resolution"] == [512, 512] and summary["throughput"]["images_per_s"] > 0


def _table_rows(markdown: str) -> list[list[str]]:
    """The cells of the results table (the first table of probe.md)."""
    results = markdown.split("## Protocol")[0]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in results.splitlines()
            if line.startswith("| ")]


def test_a_timm_encoder_runs_the_same_protocols_and_compare_merges_the_runs(t16_weights, tmp_path, capsys):
    pe, dino, merged = tmp_path / "pe", tmp_path / "dino", tmp_path / "compare"
    timm_run = ["probe", "--smoke", "--tasks", "ade20k,davis", "--encoder", TIMM, "--out", str(dino)]
    assert main(timm_run) == 0
    assert main(["probe", "--smoke", "--tasks", "davis", "--model", MODEL, "--weights", str(t16_weights),
                 "--out", str(pe)]) == 0
    assert main(timm_run) == 0  # resumed: nothing runs again
    printed = capsys.readouterr().out
    assert "ade20k, layers 11: finished earlier" in printed and "davis, layers 11: finished earlier" in printed
    summary = json.loads((dino / "probe.json").read_text())
    assert summary["model"] == TIMM and summary["published_for"] is None
    assert [(row["task"], row["layers"], row["published"]) for row in summary["rows"]] == [
        ("ade20k", [11], None), ("davis", [11], None)]
    assert all(math.isfinite(row["value"]) for row in summary["rows"])
    assert summary["throughput"]["resolution"] == [512, 512]

    assert main(["probe", "--compare", str(dino), str(pe), "--out", str(merged)]) == 0
    table = (merged / "probe.md").read_text()
    assert table in capsys.readouterr().out
    rows = _table_rows(table)
    assert [(row[0], row[2]) for row in rows] == [("encoder", "task"), (TIMM, "ade20k"), (TIMM, "davis"),
                                                  (MODEL, "davis")]
    assert rows[0][9:11] == ["images/s", "peak memory (MiB)"] and float(rows[3][9]) > 0
    assert rows[3][7] == "55.0" and rows[2][7] == "-"  # PE-T's published DAVIS number; none for a timm model
    compared = json.loads((merged / "probe.json").read_text())
    assert [run["model"] for run in compared["runs"]] == [TIMM, MODEL] and len(compared["rows"]) == 3
    assert len((merged / "probe.csv").read_text().splitlines()) == 4 and (merged / "probe_compare.png").is_file()


def test_compare_refuses_unfinished_runs_and_other_protocols(tmp_path, capsys):
    run = {"model": MODEL, "weights": "random (seed 0)", "smoke": True, "published_for": MODEL, "parameters": 1,
           "protocol": {"davis": {"layers": "the last block", "resolution": "short side 240 px", "head": "h",
                                  "schedule": "none"}},
           "throughput": {}, "rows": []}
    for name, changes in (("a", {}), ("b", {"model": TIMM, "protocol": {"davis": {**run["protocol"]["davis"],
                                                                                 "resolution": "short side 480 px"}}}),
                          ("c", {"smoke": False})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "probe.json").write_text(json.dumps({**run, **changes}))
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "probe.json").write_text(json.dumps({k: v for k, v in run.items() if k != "protocol"}))
    out = tmp_path / "out"
    for runs, message in ((["a", "unfinished"], "holds no finished probe run"),
                          (["a", "earlier"], "written by an earlier pe_dense without the protocol"),
                          (["a", "b"], f"{TIMM} and {MODEL} ran davis under different protocols (resolution"),
                          (["a", "c"], "the runs mix --smoke and real runs")):
        assert main(["probe", "--compare", *(str(tmp_path / r) for r in runs), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err and not out.exists()


@pytest.fixture(scope="module")
def core_t_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "PE-Core-T16-384.pt"
    torch.save(build_encoder("PE-Core-T16-384").state_dict(), path)
    return path


@pytest.mark.parametrize("args, message", [
    (["--smoke", "--tasks", "ade20k,kitti"], "unknown task(s) kitti: choose from ade20k, nyu, davis"),
    (["--tasks", "davis", "--weights", "{weights}", "--data", "davis={missing}"], "does not exist"),
    (["--tasks", "ade20k,davis", "--weights", "{weights}", "--data", "davis={empty}"], "no dataset for ade20k"),
    (["--tasks", "ade20k", "--weights", "{weights}", "--data", "ade20k={empty}"], "--data ade20k=PATH"),
    (["--tasks", "davis", "--weights", "{weights}", "--data", "davis={empty}"], "is '{empty}' a DAVIS 2017"),
    (["--smoke", "--weights", "{other}"], "the checkpoint looks like: PE-Core-T16-384"),
    (["--smoke", "--layer", "12"], "PE-Spatial-T16-512 has 12 blocks"),
    (["--smoke", "--data", "davis={empty}"], "--smoke runs on the built-in data"),
    (["--tasks", "davis", "--data", "davis={empty}"], "--weights is needed"),
    (["--smoke", "--encoder", "timm:vit_small_patch14_dinov7"], "unknown timm model 'vit_small_patch14_dinov7'"),
    (["--smoke", "--encoder", "timm:resnet18"], "timm:resnet18 is not a plain ViT"),
    (["--smoke", "--encoder", TIMM, "--layer", "12"], f"{TIMM} has 12 blocks"),
    (["--smoke", "--encoder", TIMM, "--weights", "{weights}"], f"does not load into {TIMM}"),
    (["--smoke", "--encoder", "vit_small_patch14_dinov2"], "--encoder takes timm:NAME"),
    (["--compare", "{empty}", "--smoke"], "--compare merges finished runs: it takes their folders and --out only"),
], ids=["unknown task", "missing path", "task without data", "not ADE20k", "not DAVIS", "other model",
        "layer out of range", "smoke with data", "no weights", "unknown timm model", "timm model not a ViT",
        "timm layer out of range", "PE weights for timm", "encoder without timm:", "compare with run options"])
def test_bad_inputs_exit_2_before_anything_is_written(args, message, t16_weights, core_t_weights, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    places = {"weights": t16_weights, "other": core_t_weights, "missing": tmp_path / "missing",
              "empty": tmp_path / "empty"}
    args = [arg.format(**places) for arg in args]
    out = tmp_path / "out"
    which = [] if {"--encoder", "--compare"} & set(args) else ["--model", MODEL]
    assert main(["probe", *which, *args, "--out", str(out)]) == 2
    assert message.format(**places) in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    from pe_dense.models.timm_encoder import checkpoint_state

    path = tmp_path_factory.mktemp("weights") / "dinov3_tiny.safetensors"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        save_state_dict(checkpoint_state(build_encoder(TIMM)), path)
    return path


@pytest.mark.parametrize("task", ["ade20k", "nyu"])
@pytest.mark.parametrize("encoder", [MODEL, TIMM])
def test_an_explicit_layer_reaches_the_backbone_and_fits_the_head(task, encoder, t16_weights, timm_weights, tmp_path):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from pe_dense.probe import TASKS, mmseg_jobs

    config = encoder_config(encoder)
    weights = timm_weights if encoder == TIMM else t16_weights
    for layers in [(4,), TASKS[task].protocol_layers(config)]:
        cfg = mmseg_jobs.prepare(TASKS[task], config, weights, layers, None, True, "none", tmp_path)
        assert cfg.model.data_preprocessor.mean == [255 * m for m in config.pixels.mean]
        init_default_scope("mmseg")
        model = MODELS.build(cfg.model).eval()
        assert model.backbone.out_indices == layers and model.backbone.encoder.num_blocks == max(layers) + 1
        with torch.no_grad():
            output = model._forward(torch.zeros(1, 3, 64, 64))
        assert output.shape[:2] == (1, 9 if task == "ade20k" else 1) and torch.isfinite(output).all()


def test_a_real_run_reads_the_size_config_and_data_and_keeps_the_protocol_batch(t16_weights, tmp_path, monkeypatch):
    from pe_dense.data.scenes import write_scenes_split
    from pe_dense.probe import TASKS, mmseg_jobs

    ade = tmp_path / "ADEChallengeData2016"  # scenes in ADE20k's folders: what ADE20KDataset reads
    write_scenes_split(ade, "training", num_images=2)
    write_scenes_split(ade, "validation", num_images=1)
    config, task = get_config("PE-Core-T16-384"), TASKS["ade20k"]  # a Core model runs the T config
    cfg = mmseg_jobs.prepare(task, config, t16_weights, (11,), ade, False, "none", tmp_path / "work")
    assert Path(cfg.filename).name == "linear_PEspatial_T_ade20k.py" and cfg.model.backbone.model == config.name
    assert cfg.train_cfg.max_iters == 40000 and cfg.train_dataloader.batch_size == 16
    assert cfg.model.test_cfg.crop_size == (512, 512) and cfg.model.test_cfg.stride == (341, 341)
    dinov2 = encoder_config("timm:vit_small_patch14_dinov2")  # a timm model: the protocol fitted to its patch
    timm_cfg = mmseg_jobs.prepare(task, dinov2, t16_weights, (11,), ade, False, "none", tmp_path / "work")
    assert Path(timm_cfg.filename).name == "linear_PEspatial_B_ade20k.py"
    assert timm_cfg.model.test_cfg.crop_size == (518, 518) and timm_cfg.model.test_cfg.stride == (345, 345)
    assert timm_cfg.model.data_preprocessor.size_divisor == 14 and timm_cfg.model.decode_head.in_channels == 384
    assert timm_cfg.model.data_preprocessor.std == pytest.approx([58.395, 57.12, 57.375])
    assert cfg.train_dataloader.dataset.data_root == cfg.val_dataloader.dataset.data_root == str(ade)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: the total batch is shared
    cfg = mmseg_jobs.prepare(task, config, t16_weights, (11,), ade, False, "pytorch", tmp_path / "work")
    assert cfg.train_dataloader.batch_size == 8
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="total batch of 16, which 3 processes cannot share"):
        mmseg_jobs.prepare(task, config, t16_weights, (11,), ade, False, "pytorch", tmp_path / "work")


def test_a_layer_sweep_gives_a_row_per_task_and_layer_and_a_plot(t16_weights, tmp_path):
    out = tmp_path / "sweep"
    assert main(["probe", "--smoke", "--tasks", "davis", "--layers", "1,-1", "--model", MODEL, "--weights",
                 str(t16_weights), "--out", str(out)]) == 0
    rows = json.loads((out / "probe.json").read_text())["rows"]
    assert [(row["task"], row["layers"]) for row in rows] == [("davis", [1]), ("davis", [11])]
    assert all(math.isfinite(row["value"]) for row in rows) and rows[0]["value"] != rows[1]["value"]
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"davis_layer1", "davis_layer11"}
    with Image.open(out / "probe_layers.png") as plot:
        assert plot.size[0] > 300 and plot.size[1] > 200


def test_the_launcher_reaches_mmengine(t16_weights, tmp_path, monkeypatch):
    from pe_dense.integrations.mmseg import training

    seen = []

    def stop(cfg):
        seen.append(cfg)
        raise KeyboardInterrupt  # the wiring is what is tested: no distributed training here

    monkeypatch.setattr(training, "train_then_validate", stop)
    out = tmp_path / "out"
    assert main(["probe", "--smoke", "--tasks", "ade20k", "--model", MODEL, "--weights", str(t16_weights),
                 "--launcher", "pytorch", "--out", str(out)]) == 130
    assert [cfg.launcher for cfg in seen] == ["pytorch"]
    assert seen[0].env_cfg.dist_cfg.backend == ("nccl" if torch.cuda.is_available() else "gloo")
    assert seen[0].resume and seen[0].work_dir == str((out / "ade20k").resolve())
