"""SAM correspondence targets for one image: batched grid decoding vs one point per decoder call.

Ways to the same targets (checked equal before timing), each encoding the image once:
  batched    SAMCorrespondenceTeacher as configured by default: up to 64 prompts per decoder call, on
             the CPU as many as its memory budget allows (4 at 1024 px, 64 at 256 px)
  batched_K  the same teacher with K prompts per call whatever their memory (K = 64 on CPU, 256 on GPU)
  per_point  the same teacher with one prompt per decoder call
  predictor  the library's own predictor called once per point (segment-anything's SamPredictor,
             sam2's SAM2ImagePredictor), its low-resolution logits resized the same way: the loop
             a user would write with the public API
The teacher's ways are also timed decoding alone (the image encoded once beforehand), where batching
shows undiluted by the encoder.

On the CPU the process keeps freed memory for reuse, as the alignment trainer does
(pe_dense.align.allocator); --default-allocator leaves glibc's defaults (results named *_default_allocator).

    python benchmarks/sam_teacher.py                 # CPU: SAM ViT-B and SAM 2.1 Hiera-T, random weights
    python benchmarks/sam_teacher.py --sizes 1024    # only the 1024 px cases (sam_teacher_cpu_1024.json)
    python benchmarks/sam_teacher.py --device cuda   # adds SAM 2.1-L targets/s at 1024 and an
                                                     # alignment step of PE-Spatial-L14 at 448 (bf16)
"""

from __future__ import annotations

import argparse
import time

import harness
import numpy as np
import torch
import torch.nn.functional as F

from pe_dense.align.allocator import reuse_freed_memory
from pe_dense.align.teachers import SAMCorrespondenceTeacher, point_grid
from pe_dense.integrations.sam import build_segmenter

TOKEN_GRID = (32, 32)  # PE-Spatial-L14 / G14 at 448 px
UNCAPPED = 2**62  # a CPU memory budget that never limits the prompts per call


def _predictor_loop(segmenter, image: torch.Tensor, points_per_side: int):
    """Targets (N, P²) from the library predictor, one point per call."""
    size = segmenter.image_size
    points = point_grid(points_per_side, size, device=image.device)
    square = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)
    if segmenter.family == "segment_anything":
        from segment_anything import SamPredictor

        predictor = SamPredictor(segmenter.sam)
        predictor.set_torch_image(square * 255, (size, size))
        label = torch.ones(1, 1, device=image.device)

        def decode(point):
            return predictor.predict_torch(point[None, None], label, multimask_output=False, return_logits=True)[2]
    else:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        predictor = SAM2ImagePredictor(segmenter.model)
        predictor._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
        predictor.set_image((square[0] * 255).round().byte().permute(1, 2, 0).cpu().numpy())
        label = np.ones(1)

        def decode(point):
            low_res = predictor.predict(point.cpu().numpy()[None] / size, label, multimask_output=False,
                                        return_logits=True, normalize_coords=False)[2]
            return torch.as_tensor(low_res, device=image.device)[None]
    maps = [F.interpolate(decode(p).float(), size=TOKEN_GRID, mode="bilinear", antialias=True).flatten(1)
            for p in points]
    return torch.cat(maps).T


def bench_case(family, arch, image_size, points_per_side, batch_sizes, device, repeats):
    torch.manual_seed(0)
    segmenter = build_segmenter(family, arch, image_size=image_size, device=device)
    image = torch.rand(3, image_size, image_size, device=device)
    if family == "sam2":  # its predictor takes uint8 pictures: give all three the same one
        image = (image * 255).round() / 255
    teachers = {"batched": SAMCorrespondenceTeacher(segmenter, points_per_side)}
    teachers.update({f"batched_{k}": SAMCorrespondenceTeacher(segmenter, points_per_side, k, cpu_chunk_bytes=UNCAPPED)
                     for k in batch_sizes})
    teachers["per_point"] = SAMCorrespondenceTeacher(segmenter, points_per_side, 1)
    with torch.no_grad():
        fns = {name: (lambda t=t: t(image[None], TOKEN_GRID)[0]) for name, t in teachers.items()}
        fns["predictor"] = lambda: _predictor_loop(segmenter, image, points_per_side)
        reference = fns["per_point"]()
        for fn in fns.values():
            torch.testing.assert_close(fn(), reference, atol=1e-4, rtol=1e-4)
        times = harness.time_interleaved(fns, device, repeats=repeats, warmup=0)
        encode = harness.time_interleaved({"encode": lambda: segmenter.encode(image[None])}, device, repeats=repeats,
                                          warmup=0)  # the ways above have warmed it up
        state = segmenter.encode(image[None])
        decode = harness.time_interleaved({name: (lambda t=t: t.decode(state, TOKEN_GRID))
                                           for name, t in teachers.items()}, device, repeats=repeats, warmup=0)
        per_call = teachers["batched"].points_per_call(state, device)
    # Targets per image relative to one prompt per decoder call (above 1: faster than the loop), and the same
    # for the teacher's decoding alone, the image encoded once beforehand.
    speedups = {name: round(times["per_point"] / t, 2) for name, t in times.items() if name != "per_point"}
    decoding = {name: round(decode["per_point"] / t, 2) for name, t in decode.items() if name != "per_point"}
    row = {"family": family, "arch": arch, "image_size": image_size, "points": points_per_side**2,
           "token_grid": list(TOKEN_GRID), "outputs_checked_equal": True, "batched_points_per_call": per_call,
           "seconds": {k: round(v, 4) for k, v in times.items()}, "encode_seconds": round(encode["encode"], 4),
           "decode_seconds": {k: round(v, 4) for k, v in decode.items()},
           "speedup_vs_per_point": speedups, "decoding_speedup_vs_per_point": decoding}
    print(f"{family} {arch} @ {image_size}, {points_per_side**2} points: per point {times['per_point']:.2f} s "
          f"(encoding {encode['encode']:.2f} s); speed-up over it: {speedups}, decoding alone: {decoding} "
          f"(batched: {per_call} per call)")
    return row


def gpu_figures(device) -> dict:
    """SAM 2.1-L targets/s at 1024 (bf16, 1024 points) and one PE-Spatial-L14 alignment step at 448."""
    from pe_dense.align.config import (
        AlignConfig,
        DataConfig,
        FeatureTeacherConfig,
        SAMTeacherConfig,
        StudentConfig,
        TrainConfig,
    )
    from pe_dense.align.trainer import AlignTrainer

    torch.manual_seed(0)
    teacher = SAMCorrespondenceTeacher(build_segmenter("sam2", "hiera_l", device=device), 32, 256)
    images = torch.rand(8, 3, 1024, 1024, device=device)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        seconds = harness.time_interleaved({"targets": lambda: teacher(images, TOKEN_GRID)}, device, repeats=3)
    config = AlignConfig(
        student=StudentConfig(model="PE-Spatial-L14-448", weights=None, grad_checkpointing=True),
        teacher=FeatureTeacherConfig(model="PE-Core-L14-336", weights=None, image_size=448),
        sam=SAMTeacherConfig(family=None), data=DataConfig(num_workers=0),
        train=TrainConfig(output_dir="/tmp/pe_dense_bench_align", batch_size=8, device=str(device)))
    trainer = AlignTrainer(config)
    batch = torch.rand(8, 3, 448, 448, device=device)
    targets = torch.randn(8, 1024, 1024, device=device)
    step = harness.time_interleaved({"step": lambda: (trainer.model(batch, trainer.teacher(batch), targets)["total"]
                                                      .backward())}, device, repeats=5)
    return {"sam2.1_hiera_l_1024_targets_per_second": round(8 / seconds["targets"], 2),
            "align_step_PE-Spatial-L14_448_batch8_seconds": round(step["step"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 256], help="SAM input sizes to time")
    parser.add_argument("--default-allocator", action="store_true",
                        help="on the CPU, leave glibc's handling of freed memory as it is")
    args = parser.parse_args()
    device = torch.device(args.device)
    reused = device.type == "cpu" and not args.default_allocator and reuse_freed_memory()
    # (family, arch, image size, points per side): on the CPU 1024 px is timed with 8 x 8 points (the
    # time per point does not depend on how many there are), 256 px with the full 32 x 32.
    side = 8 if device.type == "cpu" else 32
    cases = [(family, arch, size, side if size == 1024 else 32) for size in args.sizes
             for family, arch in (("segment_anything", "vit_b"), ("sam2", "hiera_t"))]
    batch_sizes = (64,) if device.type == "cpu" else (256,)
    started = time.perf_counter()
    rows = [bench_case(*case, batch_sizes, device, args.repeats) for case in cases]
    payload = {"benchmark": "sam_teacher", "environment": harness.environment(device), "weights": "random",
               "freed_memory_reused": reused, "cases": rows}
    if device.type == "cuda":
        payload["gpu"] = gpu_figures(device)
    payload["total_seconds"] = round(time.perf_counter() - started, 1)
    sizes = "" if args.sizes == parser.get_default("sizes") else "_" + "_".join(map(str, args.sizes))
    name = f"sam_teacher_{device.type}{sizes}" + ("_default_allocator" if args.default_allocator else "")
    print("wrote", harness.save(name, payload))


if __name__ == "__main__":
    main()
