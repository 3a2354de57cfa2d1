"""The built-in depth scenes: exact depth (checked against the room's geometry), deterministic, in the
NYU-Depth-v2 file layout that mmseg reads (16-bit PNGs in millimetres)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from pe_dense.data import depth_scenes
from pe_dense.data.depth_scenes import (
    DEPTH_SCALE,
    IMAGE_SIZE,
    Room,
    ensure_depth_scenes,
    intrinsics,
    ray_cast,
    render_depth_scene,
    sample_room,
    write_depth_split,
)


def back_project(depth: np.ndarray, room: Room) -> np.ndarray:
    """World points (H, W, 3) of a z-depth map through the scaled NYU camera, computed independently of
    the renderer's ray set-up (pixel centres, pinhole model)."""
    height, width = depth.shape
    fx, fy, cx, cy = intrinsics(height, width)
    v, u = np.mgrid[0:height, 0:width] + 0.5
    camera = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)
    return camera @ room.rotation.T + room.eye


def test_depth_of_an_empty_room_puts_every_pixel_on_a_wall_floor_or_ceiling():
    rng = np.random.default_rng(5)
    room = sample_room(rng)._replace(objects=())
    _, depth = ray_cast(room, (60, 80), rng)
    assert np.isfinite(depth).all() and (depth > 0).all()
    points = back_project(depth, room)
    x, y, z = np.moveaxis(points, -1, 0)
    gaps = np.stack([np.abs(y), np.abs(y - room.ceiling), np.abs(x - room.left), np.abs(x - room.right),
                     np.abs(z - room.back), np.abs(z + 1.0)])
    assert gaps.min(0).max() < 1e-9  # exact up to floating point
    floor = np.abs(y) < 1e-9
    assert floor[-1].all()  # the camera looks down: the bottom row is floor


def test_spheres_and_boxes_are_at_their_depth():
    rng = np.random.default_rng(0)
    room = sample_room(rng)._replace(objects=())
    sphere = np.array([0.0, 0.5, 3.0])
    _, depth = ray_cast(room._replace(objects=(("sphere", sphere, 0.5, np.ones(3)),)), (120, 160), rng)
    points = back_project(depth, room)
    on_sphere = np.abs(np.linalg.norm(points - sphere, axis=-1) - 0.5) < 1e-9
    assert on_sphere.sum() > 100
    box = ("box", np.array([0.3, 0.4, 2.5]), np.array([0.3, 0.4, 0.2]), math.radians(30), np.ones(3))
    _, depth = ray_cast(room._replace(objects=(box,)), (120, 160), rng)
    c, s = math.cos(box[3]), math.sin(box[3])
    local = (back_project(depth, room) - box[1]) @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]).T
    on_box = (np.abs(np.abs(local) - box[2]).min(-1) < 1e-9) & (np.abs(local) <= box[2] + 1e-9).all(-1)
    assert on_box.sum() > 100


def test_rendering_is_deterministic_and_stored_in_millimetres():
    image, depth = render_depth_scene(3, seed=0)
    again, depth_again = render_depth_scene(3, seed=0)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(depth, depth_again)
    assert not np.array_equal(depth, render_depth_scene(4, seed=0)[1])
    assert image.shape == (*IMAGE_SIZE, 3) and image.dtype == np.uint8
    assert depth.shape == IMAGE_SIZE and depth.dtype == np.uint16
    metres = depth[depth > 0] / DEPTH_SCALE
    assert 0.3 < metres.min() and metres.max() < depth_scenes.MAX_DEPTH


def test_depth_statistics_look_like_nyu():
    depths = np.concatenate([render_depth_scene(i, seed=0)[1].ravel() for i in range(20)]) / DEPTH_SCALE
    assert (depths > 0).mean() > 0.99
    assert 2.5 < np.median(depths) < 5 and np.percentile(depths, 99) > 6  # NYU: median ~2.5-3 m, up to ~10 m


@pytest.mark.suite("mmseg")
def test_split_on_disk_is_what_mmseg_reads(tmp_path):
    from mmseg.datasets.transforms import LoadDepthAnnotation

    root = write_depth_split(tmp_path, "test", num_images=2)
    images = sorted((root / "images/test").iterdir())
    depths = sorted((root / "annotations/test").iterdir())
    assert [p.name for p in images] == ["scene_000000.jpg", "scene_000001.jpg"]
    assert [p.stem for p in depths] == [p.stem for p in images]
    with Image.open(depths[1]) as png:
        assert png.mode == "I;16"
    loaded = LoadDepthAnnotation(depth_rescale_factor=1e-3).transform(
        {"depth_map_path": str(depths[1]), "seg_fields": []})["gt_depth_map"]
    np.testing.assert_allclose(loaded, render_depth_scene(1, seed=1)[1] / 1000, atol=1e-6)
    manifest = json.loads((root / depth_scenes.DATASET.manifest).read_text())
    assert manifest["splits"]["test"] == {"num_images": 2, "seed": 1, "size": list(IMAGE_SIZE)}


def test_ensure_regenerates_only_when_settings_change(tmp_path):
    ensure_depth_scenes(tmp_path, splits=("test",), num_images=2, size=(30, 40))
    first = tmp_path / "images/test/scene_000000.jpg"
    stamp = first.stat().st_mtime_ns
    ensure_depth_scenes(tmp_path, splits=("test",), num_images=2, size=(30, 40))
    assert first.stat().st_mtime_ns == stamp
    ensure_depth_scenes(tmp_path, splits=("test",), num_images=2, size=(60, 80))
    with Image.open(first) as image:
        assert image.size == (80, 60)
    with pytest.raises(ValueError, match="unknown split"):
        write_depth_split(tmp_path, "validation")
