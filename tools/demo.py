#!/usr/bin/env python
"""``make demo``: pe_dense's main jobs end to end on built-in data, one stage after another, each with
the command a user would type, then a table: stage, ran or skipped (why), headline figure, outputs.

    python tools/demo.py                                   # every stage, the short schedules (~10 min on 2 cores)
    python tools/demo.py --full                            # the configs' own schedules (make demo FULL=1)
    python tools/demo.py --stages tracking,segmentation    # some (make demo STAGES=tracking,segmentation)
    python tools/demo.py --weights PE-Spatial-T16-512.pt   # start every model from the released encoder

Without ``--weights`` the models start from random weights (nothing is downloaded). The stages that need
only the core run first; mmsegmentation's stack is built (``make mmseg``) when its first stage comes, and
detectron2, which only installs from its git repository, is tried last. A stage whose dependency cannot be
installed is skipped with the reason and how to install it; the exit status is non-zero only when a stage
that could run failed.
Each stage writes under ``<out>/<stage>`` (replaced on every run), and ``<out>/summary.json`` holds the
table's rows; data is generated under ``datasets/`` (``$PE_DENSE_DATASETS``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pe_dense.atomic_files import write_json
from pe_dense.data.generated import datasets_root

ROOT = Path(__file__).resolve().parents[1]
MODEL = "PE-Spatial-T16-512"  # the tiny encoder every stage uses (the configs' model)
SAMPLES = ["sample:astronaut", "sample:chelsea", "sample:coffee"]
DETECTION_CONFIG = "configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py"
SEGMENTATION_CONFIG = "configs/segmentation/scenes/upernet_PEspatial_T_scenes.py"
DEPTH_CONFIG = "configs/depth/scenes/dpt_PEspatial_T_scenes.py"
SUMMARY = "summary.json"  # the table's rows, for scripts: stage, status, detail (headline or why), seconds, outputs
# The training stages' short schedules, which keep the whole demo within about 10 minutes on 2 cores; --full runs
# the configs' own (600 iterations for UperNet and DPT, 950 for the Mask R-CNN).
SHORT = {
    "segmentation": ["train_cfg.max_iters=300", "train_cfg.val_interval=300", "param_scheduler.1.end=300",
                     "default_hooks.checkpoint.interval=300"],
    "depth": ["train_cfg.max_iters=250", "train_cfg.val_interval=250", "param_scheduler.1.end=250",
              "default_hooks.checkpoint.interval=250"],
    "detection": ["train.max_iter=200"],  # its cosine schedule follows train.max_iter
}
DETECTRON2_HELP = ("install it from a clone with `.venv/bin/pip install --no-build-isolation path/to/detectron2` (or "
                   "`.venv/bin/pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'`"
                   "), then run `make demo STAGES=detection`")


class StageFailed(Exception):
    """A command of a stage exited with an error."""


@dataclass
class Context:
    out: Path
    weights: Optional[str]
    full: bool = False  # the configs' own schedules, not SHORT
    python: str = sys.executable

    def run(self, shown: str, program: list[str], args: list[str]) -> None:
        """Run ``program + args`` from the repository root, its output going to the terminal; ``shown`` is
        how a user would type the program."""
        print(f"\n$ {shown} {' '.join(args)}", flush=True)
        code = subprocess.run([*program, *args]).returncode
        if code:
            raise StageFailed(f"`{shown} {args[0]} ...` exited with status {code}")

    def pe_dense(self, *args: str) -> None:
        self.run("pe-dense", [self.python, "-m", "pe_dense.cli"], list(args))

    def tool(self, name: str, *args: str) -> None:
        self.run(f"python tools/{name}", [self.python, f"tools/{name}"], list(args))

    @property
    def weights_args(self) -> list[str]:
        return ["--weights", self.weights] if self.weights else []

    def schedule(self, stage: str) -> list[str]:
        return [] if self.full else SHORT[stage]


@dataclass
class Stage:
    name: str
    what: str
    run: Callable[[Context, Path], str]  # (context, its output folder) -> headline figure
    unavailable: Callable[[Context], Optional[str]] = lambda ctx: None  # why it cannot run, or None


# ------------------------------------------------------------------------------------------ stages
def features(ctx: Context, out: Path) -> str:
    ctx.pe_dense("features", *SAMPLES, "--model", MODEL, *ctx.weights_args, "--pictures", "--out",
                 str(out / "features"), "--force")
    ctx.pe_dense("viz", *SAMPLES, "--model", MODEL, *ctx.weights_args, "--mode", "lch", "--fit", "all",
                 "--layers", "3,7,-1", "--out", str(out / "pictures"), "--force")
    images = list(json.loads((out / "features" / "features.json").read_text())["items"].values())
    channels, rows, cols = images[0]["shapes"]["layer_-1"]
    return f"{len(images)} images, {channels} x {rows} x {cols} features each; PCA and LCh pictures"


def tracking(ctx: Context, out: Path) -> str:
    from pe_dense.data.moving_shapes import ensure_moving_shapes
    from pe_dense.tracking import DavisLayout

    davis = ensure_moving_shapes()
    layout = DavisLayout(davis)
    (sequence,) = layout.sequences()
    ctx.pe_dense("track", str(layout.frames_dir(sequence)), "--mask", str(layout.annotations(sequence)[0]),
                 "--model", MODEL, *ctx.weights_args, "--out", str(out / "results" / sequence))
    ctx.tool("eval_davis.py", "--davis", str(davis), "--results", str(out / "results"), "--out", str(out / "scores"))
    with open(out / "scores" / "global_results-val.csv") as f:
        scores = next(csv.DictReader(f))
    return (f"J&F {float(scores['J&F-Mean']):.3f} (J {float(scores['J-Mean']):.3f}, F {float(scores['F-Mean']):.3f}) "
            f"on the moving-shapes video")


def detectron2_unavailable(ctx: Context) -> Optional[str]:
    """None once detectron2 imports; it is not on PyPI, so a missing one is installed from its git repository
    where that is reachable (the ``[detectron2]`` extra), and the reason is returned where it is not."""
    if importlib.util.find_spec("detectron2") is None:
        log = ctx.out / "detectron2-install.log"
        requirements = _extra_requirements("detectron2")
        print(f"detectron2 is not installed: trying {requirements[0]} (log: {log})", flush=True)
        with open(log, "w") as f:
            code = subprocess.run([ctx.python, "-m", "pip", "install", "--no-build-isolation", *requirements],
                                  stdout=f, stderr=subprocess.STDOUT).returncode
        importlib.invalidate_caches()
        if code or importlib.util.find_spec("detectron2") is None:
            return f"detectron2 is not installed and its git repository is out of reach: {DETECTRON2_HELP}"
    return None


def mmseg_unavailable(ctx: Context) -> Optional[str]:
    """None once mmsegmentation's stack is installed; a missing one is built here (``make mmseg``: mmcv from its
    source release, about 10 minutes on 2 cores once per machine), and the reason is returned where that fails."""
    if not _mmseg_installed():
        print("mmsegmentation's stack is not installed: building it with `make mmseg` (mmcv from its source "
              "release: about 10 minutes on 2 cores, once per machine)", flush=True)
        code = subprocess.run(["make", "--no-print-directory", "mmseg", f"VENV={sys.prefix}"]).returncode
        importlib.invalidate_caches()
        if code or not _mmseg_installed():
            return ("mmsegmentation's stack could not be installed (see above): see docs/install.md, then run "
                    "`make demo STAGES=segmentation,depth`")
    return None


def _mmseg_installed() -> bool:
    """mmsegmentation, mmengine and mmcv with its compiled ops (mmseg's models import them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("mmseg", "mmengine", "mmcv", "mmcv._ext"))


def _extra_requirements(extra: str) -> list[str]:
    """What pe_dense's ``[extra]`` declares (setup.py), e.g. detectron2 at its git commit."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    found = [Requirement(text) for text in requires("pe_dense") or ()]
    found = [str(r).split(";")[0].strip() for r in found if r.marker and r.marker.evaluate({"extra": extra})]
    if not found:
        raise LookupError(f"pe_dense declares no [{extra}] extra: is it installed (pip install -e .)?")
    return found


def detection(ctx: Context, out: Path) -> str:
    init = [f"train.init_checkpoint={ctx.weights}"] if ctx.weights else []
    ctx.tool("train_net.py", "--config-file", DETECTION_CONFIG, f"train.output_dir={out}", *init,
             *ctx.schedule("detection"))
    images = [str(datasets_root() / f"shapes/val/{i:06d}.png") for i in range(4)]
    ctx.pe_dense("detect", *images, "--config", DETECTION_CONFIG, "--weights", str(out / "model_final.pth"),
                 "--out", str(out / "pictures"), "--force")
    result = json.loads((out / "evaluation.json").read_text())
    return f"box AP {result['bbox']['AP']:.1f}, mask AP {result['segm']['AP']:.1f} on shapes_val"


def _train_mmseg(ctx: Context, stage: str, config: str, out: Path, command: str, images: list[str],
                 *options: str) -> dict:
    overrides = [*([f"model.backbone.weights={ctx.weights}"] if ctx.weights else []), *ctx.schedule(stage)]
    options_flag = ["--cfg-options", *overrides] if overrides else []
    ctx.tool("train_seg.py", "--config", config, "--work-dir", str(out), *options_flag)
    checkpoint = (out / "last_checkpoint").read_text().strip()
    ctx.pe_dense(command, *images, "--config", config, "--weights", checkpoint, "--out", str(out / "pictures"),
                 "--force", *options)
    return json.loads((out / "evaluation.json").read_text())


def segmentation(ctx: Context, out: Path) -> str:
    images = [str(datasets_root() / f"pe_scenes/images/validation/scene_{i:06d}.jpg") for i in range(4)]
    result = _train_mmseg(ctx, "segmentation", SEGMENTATION_CONFIG, out, "segment", images)
    return f"mIoU {result['mIoU']:.1f}, aAcc {result['aAcc']:.1f} on the scenes' validation split"


def depth(ctx: Context, out: Path) -> str:
    from pe_dense.data.depth_scenes import mean_depth_baseline

    images = [str(datasets_root() / f"pe_depth_scenes/images/test/scene_{i:06d}.jpg") for i in range(4)]
    result = _train_mmseg(ctx, "depth", DEPTH_CONFIG, out, "depth", images, "--ply")
    baseline = mean_depth_baseline(datasets_root() / "pe_depth_scenes")
    return (f"d1 {result['d1']:.3f}, RMSE {result['rmse']:.3f} m (mean depth everywhere: d1 {baseline['d1']:.3f}, "
            f"RMSE {baseline['rmse']:.3f} m)")


STAGES = [  # the core's stages first; mmsegmentation's stack is built for the next two; detectron2 is tried last
    Stage("features", "dense features + PCA/LCh pictures of built-in images (pe-dense features, viz)", features),
    Stage("tracking", "the moving-shapes video tracked (pe-dense track), scored (tools/eval_davis.py)", tracking),
    Stage("segmentation", "tiny PE UperNet on the scenes (tools/train_seg.py, pe-dense segment)", segmentation,
          mmseg_unavailable),
    Stage("depth", "tiny PE DPT on the depth scenes (tools/train_seg.py, pe-dense depth)", depth, mmseg_unavailable),
    Stage("detection", "tiny PE Mask R-CNN trained, evaluated, drawn (tools/train_net.py, pe-dense detect)",
          detection, detectron2_unavailable),
]


# ------------------------------------------------------------------------------------------ runner
@dataclass
class Outcome:
    stage: Stage
    status: str  # ran | skipped | failed
    detail: str  # headline figure, or why it was skipped or failed
    seconds: float = 0.0
    folder: str = ""


def run_stages(stages: list[Stage], ctx: Context) -> list[Outcome]:
    outcomes = []
    for stage in stages:
        print(f"\n{'=' * 100}\n== {stage.name}: {stage.what}\n{'=' * 100}", flush=True)
        began = time.perf_counter()
        reason = stage.unavailable(ctx)
        if reason:
            print(f"SKIPPED {stage.name}: {reason}", flush=True)
            outcomes.append(Outcome(stage, "skipped", reason))
            continue
        folder = ctx.out / stage.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            headline = stage.run(ctx, folder)
            outcomes.append(Outcome(stage, "ran", headline, time.perf_counter() - began, str(folder)))
            print(f"\n== {stage.name}: {headline} ({_minutes(outcomes[-1].seconds)}; outputs in {folder})")
        except Exception as e:  # the stage failed; the others still run, and the exit status says so
            detail = str(e) if isinstance(e, StageFailed) else f"{type(e).__name__}: {e}"
            outcomes.append(Outcome(stage, "failed", detail, time.perf_counter() - began, str(folder)))
            print(f"\n== {stage.name} FAILED: {e}", flush=True)
    return outcomes


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _cell(text: str, width: int = 90) -> str:
    """A table cell: long reasons are cut (the stage's own output above has them in full)."""
    return text if len(text) <= width else text[:width - 15] + "... (see above)"


def summary_table(outcomes: list[Outcome]) -> str:
    rows = [("stage", "status", "time", "headline (or why)", "outputs")]
    rows += [(o.stage.name, o.status, _minutes(o.seconds) if o.status != "skipped" else "-", _cell(o.detail),
              o.folder or "-") for o in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    total = sum(o.seconds for o in outcomes)
    return "\n".join(lines) + f"\n{len(outcomes)} stages in {_minutes(total)}"


def parse_stages(text: Optional[str]) -> list[Stage]:
    by_name = {stage.name: stage for stage in STAGES}
    names = [n.strip() for n in text.replace(" ", ",").split(",") if n.strip()] if text else list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise ValueError(f"unknown stage(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(by_name)}")
    return [by_name[n] for n in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(s.name for s in STAGES)} (default: all)")
    parser.add_argument("--weights", help=f"{MODEL} encoder weights for every stage (default: random weights)")
    parser.add_argument("--full", action="store_true", help="the configs' own schedules (longer) for the training "
                                                            "stages, which give the figures in docs/install.md")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "demo", help="each stage writes in OUT/STAGE "
                        "(default: outputs/demo)")
    args = parser.parse_args(argv)
    try:
        stages = parse_stages(args.stages)
    except ValueError as e:
        parser.error(str(e))
    weights, out = args.weights, args.out.resolve()
    if weights and Path(weights).exists():
        weights = str(Path(weights).resolve())
    os.chdir(ROOT)  # every stage runs from the repository root, as the README's commands do
    out = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    out.mkdir(parents=True, exist_ok=True)
    outcomes = run_stages(stages, Context(out, weights, args.full))
    print(f"\n{'=' * 100}\n{summary_table(outcomes)}")
    write_json(out / SUMMARY, [{"stage": o.stage.name, "status": o.status, "detail": o.detail,
                                "seconds": round(o.seconds, 1), "outputs": o.folder or None} for o in outcomes])
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
