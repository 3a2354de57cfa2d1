"""Segmentation training with mmsegmentation: every config builds and runs a step, tools/train_seg.py
trains, tests, resumes after a kill, refuses bad data; the built-in demos reach their targets."""

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
from PIL import Image

pytestmark = pytest.mark.suite("mmseg")

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools/train_seg.py"
CONFIGS = sorted(p for p in (REPO / "configs/segmentation").rglob("*.py") if p.parent.name != "_base_")
LINEAR_SCENES = REPO / "configs/segmentation/scenes/linear_PEspatial_T_scenes.py"
UPERNET_SCENES = REPO / "configs/segmentation/scenes/upernet_PEspatial_T_scenes.py"
LINEAR_ADE = REPO / "configs/segmentation/ade20k/linear_PEspatial_T_ade20k.py"
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
SERIAL = {f"{loader}.{key}": value for loader in LOADERS for key, value in (("num_workers", 0),
                                                                            ("persistent_workers", False))}


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory):
    """The built-in scenes with their default splits (as the tiny configs use them)."""
    from pe_dense.data.scenes import ensure_scenes

    return ensure_scenes(tmp_path_factory.mktemp("datasets") / "pe_scenes")


@pytest.fixture
def ade_root(tmp_path):
    """A few scenes in ADE20k's folders: what ADE20KDataset reads."""
    from pe_dense.data.scenes import write_scenes_split

    root = tmp_path / "ADEChallengeData2016"
    write_scenes_split(root, "training", num_images=4)
    write_scenes_split(root, "validation", num_images=2)
    return root


def data_options(root, serial=True) -> dict:
    """Config overrides: every dataloader reads ``root``, in the main process when ``serial``."""
    return {**{f"{loader}.dataset.data_root": str(root) for loader in LOADERS}, **(SERIAL if serial else {})}


def cli(options: dict) -> list:
    return [f"{key}={value}" for key, value in options.items()]


def train_seg(*args, timeout=600):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


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
    cfg.merge_from_dict({**small_model(config_path), **data_options(scenes_root if scenes else ade_root)})
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


def test_frozen_probe_leaves_the_encoder_bit_identical(scenes_root, tmp_path):
    from mmengine.runner import Runner

    from pe_dense.integrations.mmseg.training import load_config

    cfg = load_config(str(LINEAR_SCENES), work_dir=str(tmp_path), cfg_options={
        **data_options(scenes_root), "train_cfg.max_iters": 6, "train_cfg.val_interval": 100,
        "default_hooks.checkpoint.interval": 6})
    runner = Runner.from_cfg(cfg)
    model = runner.model
    encoder_before = {k: v.clone() for k, v in model.backbone.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    runner.train()
    assert not model.backbone.encoder.training
    assert all(torch.equal(v, encoder_before[k]) for k, v in model.backbone.encoder.state_dict().items())
    changed = [k for k, v in model.decode_head.state_dict().items() if not torch.equal(v, head_before[k])]
    assert "conv_seg.weight" in changed and "bn.running_mean" in changed


def test_linear_probe_on_random_features_beats_the_majority_class(scenes_root, tmp_path):
    result = train_seg("--config", LINEAR_SCENES, "--work-dir", tmp_path, "--cfg-options",
                       *cli(data_options(scenes_root)))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    counts = np.zeros(10)
    for path in (scenes_root / "annotations/validation").iterdir():
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=10)
    labelled = counts[1:]  # 0 is ignored
    majority_acc = 100 * labelled.max() / labelled.sum()
    majority_miou = majority_acc / len(labelled)  # IoU of the majority class is its share; the others score 0
    print(f"linear probe on random features: aAcc {metrics['aAcc']:.1f} (majority {majority_acc:.1f}), "
          f"mIoU {metrics['mIoU']:.1f} (majority {majority_miou:.1f})")
    assert metrics["aAcc"] > majority_acc + 10 and metrics["mIoU"] > 2 * majority_miou


def test_tiny_upernet_reaches_60_miou_from_random_weights(scenes_root, tmp_path):
    start = time.perf_counter()
    result = train_seg("--config", UPERNET_SCENES, "--work-dir", tmp_path, "--cfg-options",
                       *cli(data_options(scenes_root, serial=False)))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    print(f"tiny UperNet: mIoU {metrics['mIoU']:.1f}, aAcc {metrics['aAcc']:.1f} in "
          f"{time.perf_counter() - start:.0f} s")
    assert metrics["mIoU"] >= 60


def test_test_mode_prints_the_per_class_table(scenes_root, tmp_path):
    options = cli(data_options(scenes_root))
    result = train_seg("--config", LINEAR_SCENES, "--work-dir", tmp_path, "--cfg-options", *options,
                       "train_cfg.max_iters=2", "train_cfg.val_interval=100", "default_hooks.checkpoint.interval=2")
    assert result.returncode == 0, result.stderr[-3000:]
    tested = train_seg("--config", LINEAR_SCENES, "--work-dir", tmp_path / "test", "--test", tmp_path / "iter_2.pth",
                       "--cfg-options", *options)
    assert tested.returncode == 0, tested.stderr[-3000:]
    output = tested.stdout + tested.stderr
    assert "per class results" in output and "triangle" in output
    metrics = json.loads((tmp_path / "test/evaluation.json").read_text())
    assert {"mIoU", "aAcc", "mAcc"} <= metrics.keys()
    assert "evaluation: mIoU" in tested.stdout


def _optimizer_steps(path):
    from pe_dense.integrations.mmseg.checkpoint import load_from_local_safely

    checkpoint = load_from_local_safely(str(path))
    steps = {int(s["step"]) for s in checkpoint["optimizer"]["state"].values()}
    return checkpoint["meta"]["iter"], steps


def test_killed_training_resumes_from_its_last_checkpoint_with_the_optimizer_state(scenes_root, tmp_path):
    options = [*cli(data_options(scenes_root)), "train_cfg.val_interval=1000", "default_hooks.checkpoint.interval=2",
               "default_hooks.logger.interval=1"]
    process = subprocess.Popen([sys.executable, str(TOOL), "--config", str(LINEAR_SCENES), "--work-dir",
                                str(tmp_path), "--cfg-options", *options, "train_cfg.max_iters=1000"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "iter_4.pth").exists():
            assert process.poll() is None and time.monotonic() < deadline, "training stopped before iteration 4"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # The kill may land while iter_4.pth is being written, before last_checkpoint names it: resuming
    # goes on from the checkpoint last_checkpoint names, which is complete.
    last = Path((tmp_path / "last_checkpoint").read_text().strip())
    killed_at, _ = _optimizer_steps(last)
    assert killed_at >= 2
    result = train_seg("--config", LINEAR_SCENES, "--work-dir", tmp_path, "--resume", "--cfg-options", *options,
                       f"train_cfg.max_iters={killed_at + 2}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed epoch: 0, iter: {killed_at}" in result.stdout + result.stderr
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
def test_bad_data_is_refused_naming_the_file(damage, ade_root, tmp_path):
    bad = _bad_dataset(ade_root, damage)
    options = [*cli(data_options(ade_root)), "train_cfg.max_iters=4", "train_dataloader.batch_size=4",
               "train_cfg.val_interval=100", "model.backbone.weights=None", "model.backbone.keep_blocks=1"]
    result = train_seg("--config", LINEAR_ADE, "--work-dir", tmp_path / "work", "--cfg-options", *options)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train_seg: error:") and bad in last, last
    assert not list((tmp_path / "work").glob("*.pth"))


def test_missing_dataset_root_is_refused_before_any_output(tmp_path):
    result = train_seg("--config", LINEAR_ADE, "--work-dir", tmp_path / "work", "--cfg-options",
                       f"train_dataloader.dataset.data_root={tmp_path / 'nowhere'}", "model.backbone.weights=None")
    assert result.returncode == 2
    assert f"{tmp_path / 'nowhere'}/images/training" in result.stderr and "data_root" in result.stderr
    assert not (tmp_path / "work").exists()


def test_checkpoint_with_code_is_refused(tmp_path, scenes_root):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    result = train_seg("--config", LINEAR_SCENES, "--test", evil, "--work-dir", tmp_path / "work", "--cfg-options",
                       *cli(data_options(scenes_root)))
    assert result.returncode == 2 and "refusing to load" in result.stderr
    assert not (tmp_path / "pwned").exists()
