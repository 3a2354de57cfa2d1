"""Sharper features: the cost of shift-and-stitch and of guided upsampling against the plain ways.

1. Shift-and-stitch at stride 8 (k = 2: four shifted passes in one batch) against the plain forward of
   the same image, against the four passes run one after the other, and against overlapping patches at
   the same stride (one pass over 4x the tokens, an approximation); PE-Spatial-T16-512 at 512 px, one
   image of the built-in samples. The ratio to the plain forward is the price of the 2x denser grid; k^2 =
   4 is the expected figure for shift-and-stitch. The overlapping grid's difference from the
   shift-and-stitch grid (per-token cosine) is recorded too; it means something only with released
   weights (``--weights``), as random weights do not show what the model's features do.
2. Guided (joint bilateral) upsampling of a token map to the pixels of a 512 px and a 2048 px image
   (patch 16: 32x32 and 128x128 tokens), for PCA scores (3 channels, what ``viz`` upsamples), against
   bilinear upsampling: time, and the memory above the inputs (the output included), with the default
   tiles and with one tile for the whole image.

    python benchmarks/sharper.py [--repeats 3] [--device cpu] [--threads 1] [--weights PATH|hub]

On a CPU shared with other jobs torch's threads wait for each other when one is descheduled, so the
default is one thread (the ratios hold either way).
"""

from __future__ import annotations

import argparse
import warnings

import harness
import torch
import torch.nn.functional as F

from pe_dense.data import sample_image
from pe_dense.models import RandomWeightsWarning, build_encoder, preprocess
from pe_dense.models.shift_stitch import shift_and_stitch
from pe_dense.viz.guided_upsampling import TILE_ELEMENTS, guided_upsample

MODEL, SIZE, STRIDE = "PE-Spatial-T16-512", 512, 8
UPSAMPLING_SIZES, CHANNELS = (512, 2048), 3


def bench_shift_and_stitch(device, repeats, weights):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # recorded in the results instead
        encoder = build_encoder(MODEL, weights, device=device)
    image = preprocess(sample_image("coffee"), SIZE)[None].to(device)
    k2 = (encoder.patch_size // STRIDE) ** 2

    def plain():
        with torch.inference_mode():
            return encoder.dense_features(image)

    def stitched():
        with torch.inference_mode():
            return shift_and_stitch(encoder, image, STRIDE)

    def one_after_another():
        for _ in range(k2):
            plain()

    def overlapping():
        with torch.inference_mode():
            return encoder.dense_features_at(image, [-1], token_stride=STRIDE)[0]

    seconds = harness.time_interleaved({"plain": plain, f"stride {STRIDE} (batched)": stitched,
                                        f"{k2} plain passes in a row": one_after_another,
                                        f"overlapping patches, stride {STRIDE}": overlapping}, device, repeats=repeats)
    cosine = F.cosine_similarity(overlapping(), stitched()[0], dim=1).flatten().float()
    print(f"shift-and-stitch: {seconds}", flush=True)
    return {"model": MODEL, "weights": str(weights) if weights else "random", "input": SIZE, "stride": STRIDE,
            "passes": k2, "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "ratio_to_plain": harness.ratios(seconds, "plain"),
            "overlapping_vs_stitched_cosine": {"mean": round(cosine.mean().item(), 4),
                                               "p05": round(cosine.quantile(0.05).item(), 4),
                                               "min": round(cosine.min().item(), 4)}}


def upsampling_step(method: str, channels: int, side: int, tile_elements: int = TILE_ELEMENTS, device="cpu"):
    """One upsampling of a (channels, side/16, side/16) map to side x side (module level: the memory
    measurement runs it in a spawned process)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(channels, side // 16, side // 16, generator=generator).to(device)
    guide = torch.rand(3, side, side, generator=generator).to(device)
    if method == "bilinear":
        return lambda: F.interpolate(features[None], size=(side, side), mode="bilinear", align_corners=False)
    return lambda: guided_upsample(features, guide, tile_elements=tile_elements)


def bench_upsampling(device, repeats):
    results = {}
    for side in UPSAMPLING_SIZES:
        variants = {"bilinear": ("bilinear", CHANNELS, side), "guided": ("guided", CHANNELS, side),
                    "guided, one tile": ("guided", CHANNELS, side, side * side * CHANNELS)}
        steps = {name: upsampling_step(*args, device=device.type) for name, args in variants.items()}
        seconds = harness.time_interleaved(steps, device, repeats=repeats)
        if device.type == "cuda":
            memory = {name: harness.peak_memory(step, device) for name, step in steps.items()}
        else:
            memory = {name: harness.cpu_peak_extra_bytes(upsampling_step, *args) for name, args in variants.items()}
        results[f"{side}px"] = {
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "guided_over_bilinear": round(seconds["guided"] / seconds["bilinear"], 1),
            "output_mib": round(CHANNELS * side * side * 4 / 2**20),
            "peak_memory_mib": {k: round(v / 2**20) for k, v in memory.items()}}
        print(f"{side}px: {results[f'{side}px']}", flush=True)
    return {"channels": CHANNELS, "tile_elements": TILE_ELEMENTS, "patch": 16, **results}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--weights", help=f"{MODEL} weights (a file or 'hub'); random if omitted")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    harness.report(f"sharper_{device.type}", {
        "environment": harness.environment(device),
        "shift_and_stitch": bench_shift_and_stitch(device, args.repeats, args.weights),
        "guided_upsampling": bench_upsampling(device, args.repeats)})


if __name__ == "__main__":
    main()
