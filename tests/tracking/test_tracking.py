"""Tracking videos: the protocol on the built-in moving shapes, resuming, files, bad input."""

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pe_dense.cli import main
from pe_dense.data.moving_shapes import render_moving_shapes, write_moving_shapes
from pe_dense.integrations.sam import mask_from_prompts
from pe_dense.tracking import (
    DavisLayout,
    PropagationConfig,
    Statistics,
    VideoFrames,
    VideoTracker,
    davis_palette,
    read_label_png,
    score_sequence,
    track_video,
    video_writer,
    write_label_png,
)
from pe_dense.tracking.run import STATE_DIR

ROOT = Path(__file__).resolve().parents[2]
PATCH = 4


def colour_position_features(batch: torch.Tensor) -> torch.Tensor:
    """A stand-in encoder independent of learned weights: mean colour per patch plus a smooth
    position code, so propagation must follow objects by appearance."""
    colour = F.avg_pool2d(batch, PATCH)
    h, w = colour.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / h, indexing="ij")
    freqs = torch.arange(1, 3)[:, None, None] * torch.pi
    code = torch.cat([f(c[None] * freqs) for c in (ys, xs) for f in (torch.sin, torch.cos)])
    return torch.cat([colour, 0.2 * code[None]], dim=1)


def stub_tracker(short_side=240) -> VideoTracker:
    return VideoTracker(colour_position_features, PATCH, short_side=short_side)


@pytest.fixture(scope="module")
def shapes():
    return render_moving_shapes(num_frames=30, size=(240, 320), seed=0)


def as_frames(frames):
    return [(f"{i:05d}", Image.fromarray(f)) for i, f in enumerate(frames)]


def test_moving_shapes_are_deterministic_and_move(shapes):
    frames, labels = shapes
    again = render_moving_shapes(num_frames=30, size=(240, 320), seed=0)
    assert np.array_equal(frames, again[0]) and np.array_equal(labels, again[1])
    assert set(np.unique(labels[0])) == {0, 1, 2, 3}
    centres = [np.argwhere(labels[t] == 1).mean(0) for t in (0, 29)]
    areas = [(labels[:, None] == k).sum((2, 3)).squeeze() for k in (1, 2, 3)]
    assert np.linalg.norm(centres[1] - centres[0]) > 20  # motion
    assert any(a.max() > 1.5 * a.min() for a in areas)  # scale change and occlusion


def test_propagation_recovers_the_objects(shapes):
    frames, labels = shapes
    predicted = [f.labels for f in stub_tracker().track(as_frames(frames), labels[0])]
    scores = score_sequence(labels, np.stack(predicted))
    j = np.mean([Statistics.of(j).mean for j, _ in scores.values()])
    f = np.mean([Statistics.of(f).mean for _, f in scores.values()])
    assert (j + f) / 2 >= 0.9, (j, f)


def test_first_labels_keep_their_values(shapes):
    frames, labels = shapes
    remapped = np.select([labels[0] == 1, labels[0] == 2, labels[0] == 3], [7, 3, 12], 0).astype(np.uint8)
    steps = stub_tracker().track(as_frames(frames[:3]), remapped)
    assert [set(np.unique(f.labels)) <= {0, 3, 7, 12} for f in steps] == [True] * 3


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, shapes):
    frames, labels = shapes
    video = tmp_path / "frames"
    video.mkdir()
    for name, image in as_frames(frames[:14]):
        image.save(video / f"{name}.png")
    mask = (labels[0], davis_palette())
    whole = track_video(stub_tracker(), video, mask, tmp_path / "whole", progress=False)
    assert whole["frames"] == 14 and not (tmp_path / "whole" / STATE_DIR).exists()

    calls = []

    def dies_at_frame_9(batch):
        calls.append(1)
        if len(calls) == 10:
            raise Interrupt
        return colour_position_features(batch)

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        track_video(VideoTracker(dies_at_frame_9, PATCH, short_side=240), video, mask, out, progress=False)
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(9)]
    assert not (out / "overlay.mp4").exists() and not (out / "track.json").exists()  # not looking complete
    with pytest.raises(ValueError, match="interrupted tracking run"):
        track_video(stub_tracker(), video, mask, out, progress=False)
    with pytest.raises(ValueError, match="different settings"):
        track_video(stub_tracker(short_side=200), video, mask, out, resume=True, progress=False)
    summary = track_video(stub_tracker(), video, mask, out, resume=True, progress=False)
    assert summary["tracked_now"] == 5
    for i in range(14):
        assert np.array_equal(read_label_png(out / f"{i:05d}.png")[0],
                              read_label_png(tmp_path / "whole" / f"{i:05d}.png")[0]), i
    assert len(list(VideoFrames(out / "overlay.mp4"))) == 14
    with pytest.raises(ValueError, match="finished tracking run"):
        track_video(stub_tracker(), video, mask, out, progress=False)
    assert track_video(stub_tracker(), video, mask, out, resume=True, progress=False) == summary
    with pytest.raises(ValueError, match=r"finished with other settings \(short_side: 240 -> 200\)"):
        track_video(stub_tracker(short_side=200), video, mask, out, resume=True, progress=False)


def test_settings_the_first_frame_would_refuse_fail_before_any_output(tmp_path, shapes):
    frames, labels = shapes
    video = tmp_path / "frames"
    video.mkdir()
    Image.fromarray(frames[0]).save(video / "0.png")
    tracker = VideoTracker(colour_position_features, PATCH, PropagationConfig(topk=30, radius=2), short_side=16)
    with pytest.raises(ValueError, match=r"topk=30 is more than the 9 tokens a corner token sees"):
        track_video(tracker, video, (labels[0], davis_palette()), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_video_file_round_trip_and_palette_outputs(tmp_path, shapes):
    frames, labels = shapes
    with video_writer(tmp_path / "clip.mp4", fps=12) as write:
        for frame in frames[:6]:
            write(frame)
    decoded = list(VideoFrames(tmp_path / "clip.mp4"))
    assert [n for n, _ in decoded] == [f"{i:05d}" for i in range(6)]
    assert np.abs(np.asarray(decoded[3][1], dtype=float) - frames[3]).mean() < 8  # lossy codec
    palette = davis_palette().copy()
    palette[1] = [10, 200, 30]
    write_label_png(tmp_path / "first.png", labels[0], palette)
    summary = track_video(stub_tracker(), tmp_path / "clip.mp4", tmp_path / "first.png", tmp_path / "out",
                          progress=False)
    assert summary["frames"] == 6 and summary["overlay"] == "overlay.mp4"
    out_labels, out_palette = read_label_png(tmp_path / "out" / "00005.png")
    assert out_labels.shape == (240, 320) and np.array_equal(out_palette[:4], palette[:4])


def test_bad_inputs_fail_clearly_and_write_nothing(tmp_path, shapes):
    frames, labels = shapes
    mask = (labels[0], davis_palette())
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(ValueError, match="cannot read .* as a video"):
        track_video(stub_tracker(), garbage, mask, tmp_path / "a", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFrames(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image frames"):
        VideoFrames(tmp_path / "empty")
    video = tmp_path / "frames"
    video.mkdir()
    Image.fromarray(frames[0]).save(video / "0.png")
    with pytest.raises(ValueError, match="mask is 160x120 but the video is 320x240"):
        track_video(stub_tracker(), video, (labels[0][::2, ::2], davis_palette()), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    write_indexed_png_raw(tmp_path / "short.png", labels[0], [0, 0, 0, 255, 0, 0])  # 2 colours, labels to 3
    with pytest.raises(ValueError, match=r"uses labels \[2, 3\] that its palette \(2 colours\)"):
        read_label_png(tmp_path / "short.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="cannot read mask"):
        read_label_png(tmp_path / "text.png")


def write_indexed_png_raw(path, labels, palette):
    """An 8-bit indexed PNG written byte by byte (Pillow would remap values its palette lacks)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = labels.shape
    rows = b"".join(b"\x00" + row.tobytes() for row in labels.astype(np.uint8))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
                     + chunk(b"PLTE", bytes(palette)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_empty_video_file_is_an_error(tmp_path):
    import av

    path = tmp_path / "empty.mkv"
    with av.open(str(path), mode="w") as container:  # a header and no frames
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        container.start_encoding()
    with pytest.raises(ValueError, match="(contains no frames|has no video stream|cannot read)"):
        list(VideoFrames(path))


def test_binary_and_rgb_masks(tmp_path):
    binary = np.zeros((20, 30), dtype=np.uint8)
    binary[5:10, 5:15] = 255
    Image.fromarray(binary).save(tmp_path / "binary.png")
    labels, _ = read_label_png(tmp_path / "binary.png")
    assert set(np.unique(labels)) == {0, 1} and labels.sum() == 50
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[0:5, 0:5] = [0, 0, 255]
    rgb[10:15, 10:15] = [255, 0, 0]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    labels, palette = read_label_png(tmp_path / "rgb.png")
    assert set(np.unique(labels)) == {0, 1, 2}
    assert [palette[labels[0, 0]].tolist(), palette[labels[12, 12]].tolist()] == [[0, 0, 255], [255, 0, 0]]


def test_16_bit_label_masks_are_renumbered_and_too_many_labels_refused(tmp_path):
    labels = np.zeros((20, 30), dtype=np.uint16)
    labels[2:6, 2:6], labels[10:14, 10:14] = 1000, 2000
    Image.fromarray(labels).save(tmp_path / "sparse.png")
    read, _ = read_label_png(tmp_path / "sparse.png")
    assert read[3, 3] == 1 and read[12, 12] == 2 and read[0, 0] == 0 and set(np.unique(read)) == {0, 1, 2}
    many = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) % 301  # 300 objects and the background
    Image.fromarray(many).save(tmp_path / "many.png")
    with pytest.raises(ValueError, match=r"has 300 label values besides the background: more objects .* \(255\)"):
        read_label_png(tmp_path / "many.png")


def soft_disc(size=40):
    yy, xx = np.mgrid[:size, :size]
    return np.clip((12 - np.hypot(yy - 20, xx - 20)) * 20 + 128, 0, 255).astype(np.uint8)  # anti-aliased edge


def test_soft_and_lossy_masks_are_refused_with_the_reason(tmp_path):
    Image.fromarray(soft_disc()).save(tmp_path / "soft.png")
    with pytest.raises(ValueError, match="grey levels: an anti-aliased or resampled binary mask"):
        read_label_png(tmp_path / "soft.png")
    Image.fromarray((soft_disc() > 127).astype(np.uint8) * 255).save(tmp_path / "mask.jpg", quality=90)
    with pytest.raises(ValueError, match="is a JPEG"):
        read_label_png(tmp_path / "mask.jpg")
    Image.fromarray(np.stack([soft_disc()] * 3, -1)).save(tmp_path / "soft_rgb.png")
    with pytest.raises(ValueError, match="colours: a photo or an anti-aliased drawing"):
        read_label_png(tmp_path / "soft_rgb.png")
    ids = np.zeros((20, 30), dtype=np.uint8)
    ids[:5], ids[10:] = 3, 7  # a few small label ids stay as they are
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert set(np.unique(read_label_png(tmp_path / "ids.png")[0])) == {0, 3, 7}


def test_an_empty_first_mask_warns(tmp_path, shapes):
    frames, labels = shapes
    video = tmp_path / "frames"
    video.mkdir()
    for i in range(2):
        Image.fromarray(frames[i]).save(video / f"{i}.png")
    with pytest.warns(UserWarning, match="no object"):
        track_video(stub_tracker(), video, (np.zeros_like(labels[0]), davis_palette()), tmp_path / "out",
                    progress=False)


class FakePredictor:
    """Duck-types segment_anything.SamPredictor: masks are the prompt's box (or a disk at the point)."""

    def set_image(self, image):
        self.shape = image.shape[:2]

    def predict(self, multimask_output, box=None, point_coords=None, point_labels=None):
        mask = np.zeros(self.shape, dtype=bool)
        if box is not None:
            x0, y0, x1, y1 = box.astype(int)
            mask[y0:y1, x0:x1] = True
        else:
            (x, y), = point_coords
            yy, xx = np.mgrid[:self.shape[0], :self.shape[1]]
            mask = (yy - y) ** 2 + (xx - x) ** 2 < 25
        return mask[None], np.ones(1), None


def test_prompts_become_first_frame_labels():
    image = Image.new("RGB", (60, 40))
    labels = mask_from_prompts(FakePredictor(), image, boxes=[(5, 5, 20, 20)], points=[(40, 30)])
    assert labels.shape == (40, 60) and labels[10, 10] == 1 and labels[30, 40] == 2 and labels[0, 59] == 0
    with pytest.raises(ValueError, match="outside"):
        mask_from_prompts(FakePredictor(), image, boxes=[(5, 5, 80, 20)])
    with pytest.raises(ValueError, match="at least one"):
        mask_from_prompts(FakePredictor(), image)


@pytest.mark.suite("segment_anything")
def test_sam_checkpoint_is_checked(tmp_path):
    from pe_dense.integrations.sam import load_sam

    torch.save({"image_encoder.neck.0.weight": torch.zeros(1)}, tmp_path / "not_sam.pt")
    with pytest.raises(ValueError, match="is not a SAM vit_b checkpoint"):
        load_sam(tmp_path / "not_sam.pt", "vit_b")
    with pytest.raises(ValueError, match="unknown SAM model"):
        load_sam(tmp_path / "not_sam.pt", "vit_x")


def test_cli_tracks_an_mp4_and_eval_davis_scores_it(tmp_path, shapes):
    """The real PE (tiny, random weights) end to end: CLI on a generated mp4, then the DAVIS tool."""
    frames, labels = shapes
    davis = write_moving_shapes(tmp_path / "davis", num_frames=8, size=(120, 160), seed=3)
    sequence = DavisLayout(davis).sequences()[0]
    with video_writer(tmp_path / "clip.mp4", fps=8) as write:
        for path in sorted(DavisLayout(davis).frames_dir(sequence).iterdir()):
            write(np.asarray(Image.open(path)))
    first = DavisLayout(davis).annotations(sequence)[0]
    out = tmp_path / "results" / sequence
    code = main(["track", str(tmp_path / "clip.mp4"), "--mask", str(first), "--model", "PE-Spatial-T16-512",
                 "--short-side", "64", "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(8)]
    assert json.loads((out / "track.json").read_text())["weights"] == "random"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "eval_davis.py"), "--davis", str(davis),
                             "--results", str(tmp_path / "results"), "--out", str(tmp_path / "scores")],
                            capture_output=True, text=True, check=True)
    assert "J&F-Mean" in result.stdout and sequence in result.stdout
    per_sequence = (tmp_path / "scores" / "per-sequence_results-val.csv").read_text().splitlines()
    assert per_sequence[0] == "Sequence,Objects,J&F-Mean,J-Mean,F-Mean" and per_sequence[1].startswith(sequence)
    # the first frame is given: scoring the annotations themselves gives 1.0
    perfect = subprocess.run([sys.executable, str(ROOT / "tools" / "eval_davis.py"), "--davis", str(davis),
                              "--results", str(davis / "Annotations" / "480p"), "--out", str(tmp_path / "s2")],
                             capture_output=True, text=True, check=True)
    assert "1.000" in (tmp_path / "s2" / "global_results-val.csv").read_text().splitlines()[1].split(",")[0]
    assert perfect.returncode == 0


@pytest.mark.skipif(not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun is not installed beside this Python")
def test_eval_davis_under_torchrun_gives_the_scores_of_one_process(tmp_path):
    """Three sequences shared out over two processes (gloo on the CPU), scores gathered on rank 0."""
    davis = tmp_path / "davis"
    for seed, sequence in enumerate(("circles", "squares", "stars")):
        write_moving_shapes(davis, sequence=sequence, num_frames=4, size=(120, 160), seed=seed)
    argv = [str(ROOT / "tools" / "eval_davis.py"), "--davis", str(davis), "--model", "PE-Spatial-T16-512",
            "--short-side", "64"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *argv, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2",
                          *argv, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    for table in ("per-sequence_results-val.csv", "global_results-val.csv"):
        assert (tmp_path / "one" / table).read_text() == (tmp_path / "two" / table).read_text()
    rows = (tmp_path / "two" / "per-sequence_results-val.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["circles", "squares", "stars"]
    assert two.stdout.count("----- global results") == 1  # printed by rank 0 alone


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["track", str(tmp_path), "--model", "PE-Spatial-T16-512", "--out", str(tmp_path / "o")]) == 2
    assert "either as --mask or as --box/--point" in capsys.readouterr().err
    assert main(["track", str(tmp_path), "--box", "1,2,3,4", "--model", "PE-Spatial-T16-512",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--sam-checkpoint" in capsys.readouterr().err
    assert main(["track", str(tmp_path), "--mask", "m.png", "--resume", "--model", "PE-Spatial-T16-512",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--resume needs --weights" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_soft_mask_and_too_large_topk_before_writing(tmp_path, shapes, capsys):
    frames, labels = shapes
    video = tmp_path / "frames"
    video.mkdir()
    for i in range(2):
        Image.fromarray(frames[i]).save(video / f"{i}.png")
    soft = tmp_path / "soft.png"
    yy, xx = np.mgrid[:240, :320]
    Image.fromarray(np.clip((40 - np.hypot(yy - 120, xx - 160)) * 8 + 128, 0, 255).astype(np.uint8)).save(soft)
    base = ["track", str(video), "--model", "PE-Spatial-T16-512", "--out", str(tmp_path / "o")]
    assert main([*base, "--mask", str(soft)]) == 2
    assert "grey levels" in capsys.readouterr().err
    binary = tmp_path / "binary.png"
    Image.fromarray((labels[0] > 0).astype(np.uint8) * 255).save(binary)
    assert main([*base, "--mask", str(binary), "--short-side", "16", "--topk", "5"]) == 2
    assert "topk=5 is more than the" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    (tmp_path / "a_file").write_text("x")
    assert main(["track", str(tmp_path), "--mask", "m.png", "--model", "PE-Spatial-T16-512",
                 "--out", str(tmp_path / "a_file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_track_and_eval_davis_take_the_protocol_flags_from_one_source(capsys):
    """`pe-dense track` and tools/eval_davis.py share one argument group whose defaults are the protocol's
    (PropagationConfig, VideoTracker) and refuse the same bad values."""
    import importlib.util

    from pe_dense.cli import build_parser

    spec = importlib.util.spec_from_file_location("eval_davis", ROOT / "tools" / "eval_davis.py")
    eval_davis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_davis)
    track = build_parser().parse_args(["track", "v.mp4", "--model", "M", "--out", "o"])
    evaluate = eval_davis.parse_args(["--davis", "d", "--model", "M", "--out", "o"])
    protocol = PropagationConfig()
    expected = {"context": protocol.context, "radius": protocol.radius, "topk": protocol.topk,
                "temperature": protocol.temperature, "short_side": 480, "layer": -1, "precision": "fp32"}
    assert {k: getattr(track, k) for k in expected} == expected == {k: getattr(evaluate, k) for k in expected}
    for flag, value in [("--topk", "0"), ("--radius", "-1"), ("--context", "x"), ("--temperature", "0"),
                        ("--short-side", "0")]:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["track", "v.mp4", "--model", "M", "--out", "o", flag, value])
        track_error = capsys.readouterr().err.splitlines()[-1].split("error: ", 1)[1]
        with pytest.raises(SystemExit):
            eval_davis.parse_args(["--davis", "d", "--model", "M", "--out", "o", flag, value])
        assert capsys.readouterr().err.splitlines()[-1].split("error: ", 1)[1] == track_error
    with pytest.raises(SystemExit):  # as `pe-dense track` (tests/test_cli.py): no precision slower than fp32
        eval_davis.parse_args(["--davis", "d", "--model", "M", "--out", "o", "--precision", "fp16"])
    assert "fp16 is not supported on the CPU" in capsys.readouterr().err
