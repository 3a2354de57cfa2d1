"""Segmentation training with mmsegmentation: every config builds and runs a step, training moves every
parameter it should and lowers the loss, tools/train_seg.py tests, resumes after a kill, refuses bad data;
the built-in demos reach their targets (slow tier)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SCENES_IMAGES, cfg_options, mmseg_data_options
from fitting import assert_loss_falls, check_frozen_linear_probe, fit_mmseg_batch
from PIL import Image

pytestmark = pytest.mark.suite("mmseg")

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools/train_seg.py"
CONFIGS = sorted(p for p in (REPO / "configs/segmentation").rglob("*.py") if p.parent.name != "_base_")
LINEAR_SCENES = REPO / "configs/segmentation/scenes/linear_PEspatial_T_scenes.py"
UPERNET_SCENES = REPO / "configs/segmentation/scenes/upernet_PEspatial_T_scenes.py"
LINEAR_ADE = REPO / "configs/segmentation/ade20k/linear_PEspatial_T_ade20k.py"


@pytest.fixture
def ade_root(tmp_path):
    """A few scenes in ADE20k's folders: what ADE20KDataset reads."""
    from pe_dense.data.scenes import write_scenes_split

    root = tmp_path / "ADEChallengeData2016"
    write_scenes_split(root, "training", num_images=4)
    write_scenes_split(root, "validation", num_images=2)
    return root


def small_scenes(root, serial=True) -> dict:
    return mmseg_data_options(root, SCENES_IMAGES, serial)


def small_model(config_path):
    """Overrides for a quick build: random weights, two blocks (G and L at reduced depth)."""
    upernet = "upernet" in config_path.name
    return {"model.backbone.weights": None, "model.backbone.keep_blocks": 2,
            "model.backbone.out_indices": (0, 1, 1, 1) if upernet else (-1,)}


def _synthetic_batch(size: int, num_classes: int, count: int = 2):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for _ in range(count):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size)))
        samples.append(sample)
    return dict(inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(count)],
                data_samples=samples)


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_builds_trains_predicts_and_resolves_its_data(config_path, ade_root, scenes_root):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(config_path))
    scenes = "scenes" in config_path.parts
    data = small_scenes(scenes_root) if scenes else mmseg_data_options(ade_root)
    cfg.merge_from_dict({**small_model(config_path), **data})
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model)
    model.init_weights()
    encoder = model.backbone.encoder
    num_classes = 9 if scenes else 150
    assert encoder.config.name == cfg.model.backbone.model and encoder.num_blocks == 2
    assert model.decode_head.num_classes == num_classes
    # one step and one prediction at 4x4 tokens (the configs' own crops make G's UperNet take minutes)
    size = 4 * encoder.patch_size
    losses = model.train_step(_synthetic_batch(size, num_classes), build_optim_wrapper(model, cfg.optim_wrapper))
    assert losses and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        prediction = model.test_step(_synthetic_batch(size - 3, num_classes, count=1))[0]  # padded to the patch
    assert prediction.pred_sem_seg.data.shape == (1, size - 3, size - 3)
    for loader in ("train_dataloader", "val_dataloader"):
        batch = next(iter(Runner.build_dataloader(cfg[loader])))
        for image, sample in zip(batch["inputs"], batch["data_samples"]):
            labels = sample.gt_sem_seg.data
            # training crops pair pixels with labels; evaluation scores at the label map's own size
            assert labels.shape[1:] == (image.shape[1:] if loader == "train_dataloader" else sample.ori_shape)
            assert set(labels.unique().tolist()) <= set(range(num_classes)) | {255}


def _train_in_process(config, work_dir, options):
    """Train ``config`` with mmengine's Runner in this process; the runner and its training losses."""
    from mmengine.runner import Runner

    from pe_dense.integrations.mmseg.training import load_config

    runner = Runner.from_cfg(load_config(str(config), work_dir=str(work_dir), cfg_options=options))
    runner.train()
    return runner, runner.message_hub.get_scalar("train/loss").data[0]


def test_frozen_linear_probe_learns_and_leaves_the_encoder_bit_identical(scenes_root, tmp_path):
    check_frozen_linear_probe(LINEAR_SCENES, tmp_path, {
        **small_scenes(scenes_root), "train_cfg.max_iters": 6, "train_cfg.val_interval": 100,
        "default_hooks.checkpoint.interval": 6, "train_dataloader.batch_size": 4},
        "conv_seg.weight", "linear probe on one batch")


def test_upernet_trains_every_parameter_and_fits_a_batch(scenes_root, tmp_path):
    """The fast stand-in of the 600-iteration demo (slow tier): the demo's model, optimizer and data."""
    from pe_dense.integrations.mmseg.training import load_config

    cfg = load_config(str(UPERNET_SCENES), work_dir=str(tmp_path), cfg_options={
        **small_scenes(scenes_root), "train_dataloader.batch_size": 4})
    losses, silent = fit_mmseg_batch(cfg, steps=20)
    assert not silent  # the encoder (not frozen here), the neck and both heads
    assert_loss_falls(losses, "UperNet on one batch")


@pytest.mark.slow
def test_linear_probe_on_random_features_beats_the_majority_class(tmp_path):
    from pe_dense.data.generated import datasets_root

    result = train_seg_process("--config", LINEAR_SCENES, "--work-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    counts = np.zeros(10)
    for path in (datasets_root() / "pe_scenes/annotations/validation").iterdir():
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=10)
    labelled = counts[1:]  # 0 is ignored
    majority_acc = 100 * labelled.max() / labelled.sum()
    majority_miou = majority_acc / len(labelled)  # IoU of the majority class is its share; the others score 0
    print(f"linear probe on random features: aAcc {metrics['aAcc']:.1f} (majority {majority_acc:.1f}), "
          f"mIoU {metrics['mIoU']:.1f} (majority {majority_miou:.1f})")
    assert metrics["aAcc"] > majority_acc + 10 and metrics["mIoU"] > 2 * majority_miou


@pytest.mark.slow
def test_tiny_upernet_reaches_60_miou_from_random_weights(tmp_path):
    result = train_seg_process("--config", UPERNET_SCENES, "--work-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    print(f"tiny UperNet: mIoU {metrics['mIoU']:.1f}, aAcc {metrics['aAcc']:.1f}")
    assert metrics["mIoU"] >= 60


def train_seg_process(*args):
    """tools/train_seg.py as its own process, the way it is run."""
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=REPO)


def test_test_mode_prints_the_per_class_table(trained_segmenter, scenes_root, tmp_path, train_seg, capsys):
    assert train_seg(["--config", str(LINEAR_SCENES), "--work-dir", str(tmp_path), "--test", str(trained_segmenter),
                      "--cfg-options", *cfg_options(small_scenes(scenes_root))]) == 0
    output = capsys.readouterr()
    log = next(tmp_path.glob("*/*.log")).read_text()
    assert "per class results" in log and "triangle" in log
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    assert {"mIoU", "aAcc", "mAcc"} <= metrics.keys()
    assert "evaluation: mIoU" in output.out


def _optimizer_steps(path):
    from pe_dense.integrations.mmseg.checkpoint import load_from_local_safely

    checkpoint = load_from_local_safely(str(path))
    steps = {int(s["step"]) for s in checkpoint["optimizer"]["state"].values()}
    return checkpoint["meta"]["iter"], steps


def test_killed_training_resumes_from_its_last_checkpoint_with_the_optimizer_state(scenes_root, tmp_path,
                                                                                    train_seg):
    options = [*cfg_options(small_scenes(scenes_root)), "train_cfg.val_interval=1000",
               "default_hooks.checkpoint.interval=2", "default_hooks.logger.interval=1"]
    process = subprocess.Popen([sys.executable, str(TOOL), "--config", str(LINEAR_SCENES), "--work-dir",
                                str(tmp_path), "--cfg-options", *options, "train_cfg.max_iters=1000"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (tmp_path / "iter_4.pth").exists():
            assert process.poll() is None, "training stopped before iteration 4"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # The kill may land while iter_4.pth is being written, before last_checkpoint names it: resuming
    # goes on from the checkpoint last_checkpoint names, which is complete.
    last = Path((tmp_path / "last_checkpoint").read_text().strip())
    killed_at, _ = _optimizer_steps(last)
    assert killed_at >= 2
    assert train_seg(["--config", str(LINEAR_SCENES), "--work-dir", str(tmp_path), "--resume", "--cfg-options",
                      *options, f"train_cfg.max_iters={killed_at + 2}"]) == 0
    logs = sorted(tmp_path.glob("*/*.log"))
    assert f"resumed epoch: 0, iter: {killed_at}" in logs[-1].read_text()
    final, steps = _optimizer_steps(tmp_path / f"iter_{killed_at + 2}.pth")
    assert final == killed_at + 2 and steps == {killed_at + 2}  # AdamW's step count went on from the checkpoint


def _bad_dataset(ade_root, damage):
    image = ade_root / "images/training/scene_000001.jpg"
    label = ade_root / "annotations/training/scene_000001.png"
    damage(image, label)
    return str(label if "label" in damage.__name__ else image)


def label_beyond_classes(image, label):
    labels = np.asarray(Image.open(label)).copy()
    labels[:4, :4] = 200
    Image.fromarray(labels).save(label)


def label_of_other_size(image, label):
    Image.fromarray(np.ones((100, 120), np.uint8)).save(label)


def corrupt_image(image, label):
    image.write_bytes(image.read_bytes()[:200])


@pytest.mark.parametrize("damage", [label_beyond_classes, label_of_other_size, corrupt_image],
                         ids=lambda f: f.__name__)
def test_bad_data_is_refused_naming_the_file(damage, ade_root, tmp_path, train_seg, capsys):
    bad = _bad_dataset(ade_root, damage)
    options = [*cfg_options(mmseg_data_options(ade_root)), "train_cfg.max_iters=4", "train_dataloader.batch_size=4",
               "train_cfg.val_interval=100", "model.backbone.weights=None", "model.backbone.keep_blocks=1"]
    assert train_seg(["--config", str(LINEAR_ADE), "--work-dir", str(tmp_path / "work"), "--cfg-options",
                      *options]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("train_seg: error:") and bad in last, last
    assert not list((tmp_path / "work").glob("*.pth"))


def test_missing_dataset_root_is_refused_before_any_output(tmp_path, train_seg, capsys):
    assert train_seg(["--config", str(LINEAR_ADE), "--work-dir", str(tmp_path / "work"), "--cfg-options",
                      f"train_dataloader.dataset.data_root={tmp_path / 'nowhere'}",
                      "model.backbone.weights=None"]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'}/images/training" in error and "data_root" in error
    assert not (tmp_path / "work").exists()


def test_checkpoint_with_code_is_refused(tmp_path, scenes_root, train_seg, capsys):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    assert train_seg(["--config", str(LINEAR_SCENES), "--test", str(evil), "--work-dir", str(tmp_path / "work"),
                      "--cfg-options", *cfg_options(small_scenes(scenes_root))]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_the_command_line_tool_runs_as_a_script(tmp_path):
    """tools/train_seg.py run as a script: its exit status and error line (the tests above call its main())."""
    result = train_seg_process("--config", LINEAR_ADE, "--work-dir", tmp_path / "work", "--cfg-options",
                               f"train_dataloader.dataset.data_root={tmp_path / 'nowhere'}")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("train_seg: error:")
