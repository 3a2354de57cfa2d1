"""Alignment data (image folders incl. the SA-1B layout, crops, the resumable stream), the target
cache and the configuration."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pe_dense.align.config import AlignConfigError, apply_overrides, load_config
from pe_dense.align.data import EpochStreamSampler, ImageFolder, collate, find_image_files
from pe_dense.align.target_cache import TargetCache

TINY = Path(__file__).parents[2] / "configs" / "align" / "tiny.py"


def _write_image(path: Path, size=(48, 32), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def sa1b_folder(tmp_path):
    """Two SA-1B-style tar folders (sa_<n>.jpg with its sa_<n>.json), plus an unreadable image."""
    for i, part in enumerate(["sa_000000", "sa_000000", "sa_000001"]):
        _write_image(tmp_path / part / f"sa_{i}.jpg", seed=i)
        (tmp_path / part / f"sa_{i}.json").write_text(json.dumps({"annotations": []}))
    (tmp_path / "sa_000001" / "broken.jpg").write_bytes(b"not a jpeg")
    return tmp_path


def test_find_image_files_walks_the_sa1b_layout_and_ignores_annotations(sa1b_folder):
    assert find_image_files(sa1b_folder) == [
        "sa_000000/sa_0.jpg", "sa_000000/sa_1.jpg", "sa_000001/broken.jpg", "sa_000001/sa_2.jpg"]
    (sa1b_folder / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        find_image_files(sa1b_folder / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_image_files(sa1b_folder / "missing")


def test_resize_is_pils_bilinear_resize_in_unit_range(sa1b_folder):
    dataset = ImageFolder(sa1b_folder, size=16, augment="resize")
    item = dataset[(0, 0)]
    expected = np.asarray(Image.open(sa1b_folder / "sa_000000/sa_0.jpg").convert("RGB").resize((16, 16),
                                                                                               Image.BILINEAR))
    assert item["key"] == "sa_000000/sa_0.jpg"
    torch.testing.assert_close(item["image"], torch.from_numpy(expected / 255.0).permute(2, 0, 1).float())


def test_center_crop_takes_the_central_square(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 10:30] = 255  # the central 20 x 20 square is white, the sides black
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = ImageFolder(tmp_path, size=10, augment="center_crop")[(0, 0)]["image"]
    assert torch.all(image[:, :, 1:-1] == 1.0)
    assert image.min() > 0.8  # PIL's filter reaches one source pixel past the box at the edges


def test_random_crops_are_a_function_of_seed_epoch_and_index(sa1b_folder):
    dataset = ImageFolder(sa1b_folder, size=16, augment="random_resized_crop", hflip=True, seed=3)
    first = dataset[(0, 1)]["image"]
    assert torch.equal(ImageFolder(sa1b_folder, 16, "random_resized_crop", hflip=True, seed=3)[(0, 1)]["image"], first)
    assert not torch.equal(dataset[(1, 1)]["image"], first)
    assert first.shape == (3, 16, 16) and 0 <= first.min() and first.max() <= 1


def test_unreadable_images_are_reported_and_dropped_from_the_batch(sa1b_folder):
    dataset = ImageFolder(sa1b_folder, size=8)
    batch = collate([dataset[(0, i)] for i in range(4)])
    assert batch["images"].shape == (3, 3, 8, 8)
    assert batch["keys"] == ["sa_000000/sa_0.jpg", "sa_000000/sa_1.jpg", "sa_000001/sa_2.jpg"]
    assert len(batch["skipped"]) == 1 and "broken.jpg" in batch["skipped"][0]
    assert collate([dataset[(0, 2)]])["images"] is None


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_stream_deals_each_epoch_out_across_processes_and_resumes_mid_stream():
    ranks = [_take(iter(EpochStreamSampler(10, seed=1, rank=r, world_size=3)), 6) for r in range(3)]
    for epoch in (0, 1):
        seen = [index for stream in ranks for e, index in stream if e == epoch]
        assert len(seen) == 9 and len(set(seen)) == 9  # 3 per process, no repeats; one image left out
    assert [i for _, i in ranks[0][:3]] != [i for _, i in ranks[0][3:]]  # a new order each epoch
    whole = _take(iter(EpochStreamSampler(10, seed=1, rank=1, world_size=3)), 9)
    assert _take(iter(EpochStreamSampler(10, seed=1, rank=1, world_size=3, start=4)), 5) == whole[4:]
    with pytest.raises(ValueError, match="cannot be shared"):
        EpochStreamSampler(2, world_size=4)


def test_target_cache_round_trip_and_separation(tmp_path):
    targets = torch.randn(16, 9)
    cache = TargetCache(tmp_path, {"points_per_side": 3})
    assert cache.get("a.jpg") is None
    stored = cache.put("a.jpg", targets)
    assert stored.dtype == torch.float16
    torch.testing.assert_close(stored.float(), targets, atol=1e-2, rtol=1e-3)
    assert torch.equal(cache.get("a.jpg"), stored)
    assert TargetCache(tmp_path, {"points_per_side": 4}).get("a.jpg") is None  # other settings, other folder
    next(cache.directory.glob("*.safetensors")).write_bytes(b"damaged")
    assert cache.get("a.jpg") is None


def test_tiny_config_loads_and_overrides_apply():
    config = load_config(TINY, ["train.iters=3", "optim.betas=(0.9, 0.99)", "sam.family=None",
                                "student.weights=/some/file.pt"])
    assert config.train.iters == 3 and config.optim.betas == (0.9, 0.99)
    assert config.sam.family is None and not config.uses_sam
    assert config.student.weights == "/some/file.pt"
    assert load_config(TINY).train.iters != 3  # the file's config is not changed by an earlier load


@pytest.mark.parametrize("overrides, message", [
    (["teacher.image_size=160"], "resolution mismatch: teacher PE-Core-S16-384 at 160 px gives a 10x10 token grid"),
    (["sam.image_size=16"], "resolution mismatch: SAM at 16 px"),
    (["student.image_size=100"], "not a multiple of"),
    (["sam.cache_dir='/tmp/c'"], "sam.cache_dir needs the same picture"),
    (["teacher.cosine_weight=0", "sam.weight=0"], "nothing to learn from"),
    (["teacher.layer=12"], "teacher.layer 12 is outside"),
    (["sam.arch=vit_b"], "not a sam2 model"),
    (["train.iter=3"], "unknown setting 'train.iter'"),
    (["trainer.iters=3"], "unknown config section 'trainer'"),
    (["iters"], "not of the form"),
])
def test_bad_configs_are_named(overrides, message):
    with pytest.raises(AlignConfigError, match=message.replace("(", r"\(")):
        load_config(TINY, overrides)


def test_apply_overrides_leaves_the_original_alone():
    config = load_config(TINY)
    changed = apply_overrides(config, ["train.iters=1"])
    assert changed.train.iters == 1 and config.train.iters != 1


@pytest.mark.parametrize("path", sorted((TINY.parent).glob("*.py")), ids=lambda p: p.stem)
def test_every_alignment_config_validates(path, tmp_path):
    config = load_config(path, [f"data.root='{tmp_path}'"])
    assert config.uses_teacher or config.uses_sam


def test_the_pe_spatial_recipe_is_the_papers():
    config = load_config(TINY.parent / "PEcore_G_to_spatial.py", ["data.root=None"])
    assert (config.student.model, config.student_size()) == ("PE-Core-G14-448", 448)
    assert config.teacher.model is None and config.teacher.layer == 41 and config.teacher.cosine_weight == 1
    assert (config.sam.family, config.sam.arch, config.sam.image_size, config.sam.points_per_side) == (
        "sam2", "hiera_l", 1024, 32)
    with pytest.raises(AlignConfigError, match="data.root /nowhere is not a folder"):
        load_config(TINY.parent / "PEcore_G_to_spatial.py", ["data.root=/nowhere"])


@pytest.mark.parametrize("size, student, image_size", [
    ("T", "PE-Core-T16-384", 512), ("S", "PE-Core-S16-384", 512), ("B", "PE-Core-B16-224", 512),
    ("L", "PE-Core-L14-336", 448)])
def test_distillation_configs_are_one_recipe_for_each_student(size, student, image_size):
    import dataclasses

    from pe_dense.align.recipes import distill_spatial_G

    config = load_config(TINY.parent / f"distill_spatial_G_to_{size}.py", ["data.root=None"])
    assert (config.student.model, config.student.image_size) == (student, image_size)  # G's 32 x 32 tokens
    assert config.train.output_dir == f"outputs/distill_spatial_G_to_{size}"
    assert dataclasses.replace(config, data=dataclasses.replace(config.data, root="datasets/sa1b")) == (
        distill_spatial_G(student, output_dir=config.train.output_dir))
    assert (config.teacher.model, config.teacher.image_size, config.sam.family) == ("PE-Spatial-G14-448", 448, None)
