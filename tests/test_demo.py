"""``make demo`` (tools/demo.py): stages run in order, a missing dependency skips its stage with the
reason and how to fix it, a failure makes the exit status non-zero without stopping the others, and the
summary table reports each stage's headline figure."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def demo(monkeypatch):
    spec = importlib.util.spec_from_file_location("demo", ROOT / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "demo", module)  # dataclasses look their module up
    monkeypatch.chdir(ROOT)  # main() moves to the repository root; this puts the test's directory back
    spec.loader.exec_module(module)
    return module


def test_stages_are_chosen_by_name(demo):
    assert [s.name for s in demo.parse_stages(None)] == ["features", "tracking", "segmentation", "depth", "detection"]
    assert [s.name for s in demo.parse_stages("depth, features")] == ["depth", "features"]
    with pytest.raises(ValueError, match="unknown stage.*detect.*choose from features, tracking"):
        demo.parse_stages("features,detect")


def test_a_skipped_stage_says_why_and_a_failed_one_sets_the_exit_status(demo, tmp_path, monkeypatch, capsys):
    def good(ctx, out):
        (out / "picture.png").write_bytes(b"")
        return "figure 1.0"

    def broken(ctx, out):
        ctx.run("python -c", [sys.executable, "-c"], ["raise SystemExit(3)"])

    stages = [demo.Stage("good", "works", good), demo.Stage("absent", "needs X", good, lambda ctx: "X is missing"),
              demo.Stage("broken", "fails", broken), demo.Stage("after", "still runs", good)]
    monkeypatch.setattr(demo, "STAGES", stages)
    assert demo.main(["--out", str(tmp_path), "--stages", "good,absent,after"]) == 0
    rows = summary(tmp_path)
    assert rows["good"]["status"] == "ran" and rows["good"]["detail"] == "figure 1.0"
    assert rows["good"]["outputs"] == str(tmp_path / "good")
    assert rows["absent"] == {"stage": "absent", "status": "skipped", "detail": "X is missing", "seconds": 0.0,
                              "outputs": None}
    table = capsys.readouterr().out.split("=" * 100)[-1]
    assert all(name in table for name in rows) and "X is missing" in table  # the printed table says the same
    assert demo._cell("why " * 40).endswith("... (see above)") and len(demo._cell("why " * 40)) == 90
    assert demo.main(["--out", str(tmp_path)]) == 1
    rows = summary(tmp_path)
    assert rows["broken"]["status"] == "failed" and "exited with status 3" in rows["broken"]["detail"]
    assert rows["after"]["status"] == "ran" and (tmp_path / "after" / "picture.png").exists()


def summary(out: Path) -> dict:
    """The demo's summary.json, by stage."""
    return {row["stage"]: row for row in json.loads((out / "summary.json").read_text())}


def test_detection_is_skipped_with_how_to_install_detectron2_when_pip_cannot_reach_it(demo, tmp_path, monkeypatch):
    calls = []

    def pip(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(demo.subprocess, "run", pip)
    reason = demo.detectron2_unavailable(demo.Context(tmp_path, None))
    assert "detectron2 is not installed" in reason
    assert "pip install --no-build-isolation path/to/detectron2" in reason and "STAGES=detection" in reason
    (command,) = calls
    assert command[1:4] == ["-m", "pip", "install"]
    assert any(arg.startswith("detectron2 @ git+https://github.com/facebookresearch/detectron2.git") for arg in command)


def test_mmseg_stages_build_the_stack_when_they_reach_it_and_say_how_when_that_fails(demo, tmp_path, monkeypatch):
    calls = []

    def make(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 2)

    monkeypatch.setattr(demo, "_mmseg_installed", lambda: False)
    monkeypatch.setattr(demo.subprocess, "run", make)
    reason = demo.mmseg_unavailable(demo.Context(tmp_path, None))
    assert "could not be installed" in reason and "make demo STAGES=segmentation,depth" in reason
    assert calls == [["make", "--no-print-directory", "mmseg", f"VENV={sys.prefix}"]]
    monkeypatch.setattr(demo, "_mmseg_installed", lambda: True)
    assert demo.mmseg_unavailable(demo.Context(tmp_path, None)) is None and len(calls) == 1


def test_training_stages_take_the_short_schedules_unless_full(demo, tmp_path):
    short, full = demo.Context(tmp_path, None), demo.Context(tmp_path, None, full=True)
    assert short.schedule("detection") == ["train.max_iter=200"] and full.schedule("detection") == []
    assert "train_cfg.max_iters=300" in short.schedule("segmentation") and full.schedule("depth") == []


def test_the_features_and_tracking_stages_type_their_commands_and_report_what_they_made(demo, tmp_path,
                                                                                         monkeypatch, capsys):
    """The stages' own code, with each command replaced by what it writes (the commands have their own tests;
    the slow tier runs the stages as `make demo` does)."""
    typed = []

    def outputs_of(ctx, shown, program, args):
        command = f"{shown} {args[0]}"
        typed.append(command)
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if command == "pe-dense features":
            (out / "features.json").write_text(json.dumps(
                {"items": {f"sample:{n}": {"shapes": {"layer_-1": [192, 32, 32]}} for n in range(3)}}))
        if shown.endswith("eval_davis.py"):
            (out / "global_results-val.csv").write_text("J&F-Mean,J-Mean,F-Mean\n0.75,0.7,0.8\n")

    monkeypatch.setattr(demo.Context, "run", outputs_of)
    assert demo.main(["--stages", "features,tracking", "--out", str(tmp_path)]) == 0
    assert typed == ["pe-dense features", "pe-dense viz", "pe-dense track", "python tools/eval_davis.py --davis"]
    rows = summary(tmp_path)
    assert rows["features"]["detail"] == "3 images, 192 x 32 x 32 features each; PCA and LCh pictures"
    assert rows["tracking"]["detail"].startswith("J&F 0.750 (J 0.700, F 0.800)")


@pytest.mark.slow
def test_the_features_and_tracking_stages_end_to_end(demo, tmp_path):
    assert demo.main(["--stages", "features,tracking", "--out", str(tmp_path)]) == 0
    rows = summary(tmp_path)
    assert rows["features"]["detail"].startswith("3 images, 192 x 32 x 32 features each")
    j_and_f = float(rows["tracking"]["detail"].split()[1])
    assert 0.5 < j_and_f <= 1.0  # random weights still follow the shapes by colour
    assert len(list((tmp_path / "features" / "features" / "pictures").glob("*.png"))) == 3
    assert list((tmp_path / "features" / "pictures").glob("*.png"))
    assert (tmp_path / "tracking" / "scores" / "global_results-val.csv").is_file()
