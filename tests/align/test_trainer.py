"""The alignment trainer end to end, with tiny random models on CPU: the losses fall, a crash and
resume reproduce the uninterrupted run exactly, the exported student loads as an official PE
checkpoint, bad images are skipped and counted, SAM targets are cached, and DDP runs under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pe_dense.align.checkpointer import find_checkpoints
from pe_dense.align.config import load_config
from pe_dense.align.data import EpochStreamSampler
from pe_dense.align.trainer import AlignTrainer
from pe_dense.data.shapes import render_shapes_image
from pe_dense.models import build_encoder
from pe_dense.models.checkpoint import CheckpointError, load_weights

ROOT = Path(__file__).parents[2]
TINY = ROOT / "configs" / "align" / "tiny.py"
# The tiny config, smaller still: 64 px students (4 x 4 tokens), SAM 2.1 Hiera-T at 64 px with 4 x 4 points.
SMALL = ["student.image_size=64", "sam.image_size=64", "sam.points_per_side=4", "train.batch_size=4",
         "train.log_period=1"]

pytestmark = pytest.mark.suite("sam2")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(12):
        Image.fromarray(render_shapes_image(i, seed=5, size=96)[0]).save(root / f"{i:02d}.png")
    return root


def _config(image_folder, output_dir, *overrides):
    return load_config(TINY, [*SMALL, f"data.root='{image_folder}'", f"train.output_dir='{output_dir}'", *overrides])


def _metrics(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def test_twenty_steps_lower_both_losses(image_folder, tmp_path):
    AlignTrainer(_config(image_folder, tmp_path, "train.iters=20")).train()
    records = _metrics(tmp_path)
    assert [r["iteration"] for r in records] == list(range(1, 21))
    for loss in ("loss_cosine", "loss_sam"):
        first = sum(r[loss] for r in records[:5]) / 5
        last = sum(r[loss] for r in records[-5:]) / 5
        print(f"alignment, {loss}: {first:.3f} -> {last:.3f} ({last / first:.2f})")
        assert last < 0.8 * first, (loss, first, last)
    assert (tmp_path / "tensorboard").is_dir()


@pytest.fixture(scope="module")
def uninterrupted(image_folder, tmp_path_factory):
    """Six iterations with drop path, random crops and flips: everything that draws random numbers."""
    output = tmp_path_factory.mktemp("uninterrupted")
    trainer = AlignTrainer(_config(image_folder, output, "train.iters=6", "train.checkpoint_period=2",
                                   "student.drop_path_rate=0.2"))
    exported = trainer.train()
    return trainer, exported


def test_crash_and_resume_reproduces_the_uninterrupted_run(image_folder, tmp_path, uninterrupted, monkeypatch):
    overrides = ["train.iters=6", "train.checkpoint_period=2", "student.drop_path_rate=0.2"]
    crashing = AlignTrainer(_config(image_folder, tmp_path, *overrides))
    real_step = AlignTrainer.step

    def step_then_crash(self, *args):
        if self.iteration == 5:  # the 6th step: iteration 5 is logged, the last checkpoint is at 4
            raise KeyboardInterrupt("killed")
        return real_step(self, *args)

    monkeypatch.setattr(AlignTrainer, "step", step_then_crash)
    with pytest.raises(KeyboardInterrupt):
        crashing.train()
    monkeypatch.setattr(AlignTrainer, "step", real_step)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter_00000002.pt", "iter_00000004.pt"]
    assert [r["iteration"] for r in _metrics(tmp_path)] == [1, 2, 3, 4, 5]

    with pytest.raises(FileExistsError, match="--resume"):
        AlignTrainer(_config(image_folder, tmp_path, *overrides))
    resumed = AlignTrainer(_config(image_folder, tmp_path, *overrides), resume=True)
    assert resumed.iteration == 4
    resumed.train()
    expected = uninterrupted[0].model.state_dict()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert [r["iteration"] for r in _metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter_00000004.pt", "iter_00000006.pt"]


def test_checkpoints_keep_their_format_and_the_newest_few(uninterrupted):
    """What resumes a run, as every release has written it (older checkpoints resume too)."""
    trainer, _ = uninterrupted
    saved = find_checkpoints(trainer.output_dir)
    assert [p.name for p in saved] == ["iter_00000004.pt", "iter_00000006.pt"]  # keep_checkpoints=2
    state = torch.load(saved[-1], weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "iteration", "batches_drawn", "skipped_images", "rng",
                          "world_size", "config"}
    assert state["iteration"] == 6 and state["batches_drawn"] == 6 and state["world_size"] == 1
    assert json.loads(state["config"])["train"]["iters"] == 6


def test_exported_student_loads_as_an_official_checkpoint_with_no_missing_keys(uninterrupted):
    trainer, exported = uninterrupted
    assert exported.name == "student_final.pt"
    student = build_encoder("PE-Spatial-T16-512", weights=exported)
    for key, value in trainer.model.student.state_dict().items():
        assert torch.equal(student.state_dict()[key], value), key
    report = load_weights(build_encoder("PE-Spatial-T16-512"), exported)
    assert report.ok and not report.missing and not report.unexpected and not report.adapted
    note = json.loads(exported.with_suffix(".json").read_text())
    assert note["model"] == "PE-Spatial-T16-512" and note["iterations"] == 6


def test_unreadable_images_are_skipped_counted_and_logged(image_folder, tmp_path, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in sorted(os.listdir(image_folder))[:6]:
        (folder / name).write_bytes((image_folder / name).read_bytes())
    (folder / "truncated.png").write_bytes((image_folder / "00.png").read_bytes()[:100])
    (folder / "text.jpg").write_text("not an image")
    trainer = AlignTrainer(_config(folder, tmp_path / "out", "train.iters=3"))
    with caplog.at_level("WARNING", logger="pe_dense.align"):
        trainer.train()
    warned = [r for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    stream = iter(EpochStreamSampler(len(trainer.dataset), seed=0))  # the order the run drew its images in
    drawn = [trainer.dataset.files[next(stream)[1]] for _ in range(trainer.batches_drawn * 4)]
    bad = sum(name in ("truncated.png", "text.jpg") for name in drawn)
    assert bad > 0 and trainer.skipped_images == bad == len(warned)
    assert _metrics(tmp_path / "out")[-1]["skipped_images"] == bad


def test_sam_targets_are_cached_so_later_epochs_skip_sam(image_folder, tmp_path):
    config = _config(image_folder, tmp_path / "out", "train.iters=6", f"sam.cache_dir='{tmp_path / 'cache'}'",
                     "data.augment='resize'", "data.hflip=False")
    trainer = AlignTrainer(config)
    computed = []
    forward = trainer.sam.forward
    trainer.sam.forward = lambda images, grid: computed.append(len(images)) or forward(images, grid)
    trainer.train()  # 6 batches of 4 = two epochs of 12 images
    assert sum(computed) == 12
    assert len(list(trainer.cache.directory.glob("*.safetensors"))) == 12


def test_a_cpu_trainer_with_a_sam_teacher_keeps_freed_memory_for_reuse(image_folder, tmp_path, monkeypatch):
    """SAM's decoder would otherwise fault its large temporaries in anew on every call (pe_dense.align.allocator)."""
    import pe_dense.align.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "reuse_freed_memory", lambda: calls.append("cpu") or True)
    AlignTrainer(_config(image_folder, tmp_path / "sam", "train.device='cpu'"))
    AlignTrainer(_config(image_folder, tmp_path / "no_sam", "train.device='cpu'", "sam.family=None"))
    assert calls == ["cpu"]


def test_cli_refuses_bad_configs_and_creates_nothing(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "align_net.py"), "--config", str(TINY),
                             f"train.output_dir='{out}'", "teacher.image_size=160"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "resolution mismatch" in result.stderr and "set teacher.image_size = 128" in result.stderr
    assert not out.exists()


def test_ddp_under_torchrun_trains_and_a_resume_needs_the_same_world_size(image_folder, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(ROOT / "tools" / "align_net.py"), "--config", str(TINY), *SMALL, f"data.root='{image_folder}'",
               f"train.output_dir='{out}'", "train.iters=2", "train.batch_size=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("aligned student") == 1  # only the first process exports
    state = torch.load(out / "checkpoints" / "iter_00000002.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]["cpu"]) == 2
    assert not torch.equal(state["rng"]["cpu"][0], state["rng"]["cpu"][1])  # each process has its own
    config = _config(image_folder, out, "train.iters=3", "train.batch_size=2")
    with pytest.raises(CheckpointError, match="written by 2 processes, this run has 1"):
        AlignTrainer(config, resume=True)
