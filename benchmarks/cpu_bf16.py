"""The encoder in bf16 on the CPU (`--precision bf16`) vs fp32, at the 480p tracking input (480x848).

Ways, same weights, same process, interleaved:
  fp32          pe_dense in float32 (the default, exact)
  bf16          pe_dense under bf16 autocast (what `--precision bf16` runs: attention on pe_dense's kernel
                on CPUs without AMX, torch's on CPUs with AMX)
  bf16_torch_attention   without AMX: the same with torch's attention (scaled_dot_product_attention)
  bf16_weights  a bf16 copy of pe_dense's weights, no autocast (the other way to run bf16)
  timm_bf16     timm's vit_pe_* with the same weights under bf16 autocast (the best available alternative)
The feature error of each bf16 way against fp32 is measured first (mean relative error per token, the
smallest cosine between a token's bf16 and fp32 features). Needs a CPU with native bf16; results go to
cpu_bf16_<kind>.json (avx512 or amx, pe_dense.cpu).

    python benchmarks/cpu_bf16.py [--models PE-Spatial-T16-512 PE-Spatial-S16-512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
from unittest import mock

import harness
import torch
import torch.nn.functional as F

from pe_dense.models import build_encoder, get_config, official_to_timm
from pe_dense.models.inference import autocast, cpu_supports_bf16
from pe_dense.ops.dot_product_attention import bf16_kernel_preferred

SIZE = (480, 848)  # a 480x854 frame with both sides rounded to multiples of 16, as the tracker does


def _error(features: torch.Tensor, reference: torch.Tensor) -> dict:
    per_token = (features - reference).norm(dim=1) / reference.norm(dim=1)
    return {"mean_relative_error": round(float(per_token.mean()), 5),
            "min_cosine": round(float(F.cosine_similarity(features, reference, dim=1).min()), 6)}


def run(models, repeats: int) -> list[dict]:
    import timm

    rows = []
    for name in models:
        torch.manual_seed(0)
        ours = build_encoder(name).eval()  # random weights: speed does not depend on them
        weights_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
        config = get_config(name)
        theirs = timm.create_model(config.timm_name, pretrained=False, img_size=config.image_size,
                                   dynamic_img_size=True).eval()
        theirs.load_state_dict(official_to_timm(ours.state_dict()))
        images = torch.randn(1, 3, *SIZE)

        def ways():
            def dense(model, batch, precision):
                with torch.inference_mode(), autocast("cpu", precision):
                    return model.dense_features_at(batch, [-1])[0].float()

            def timm_dense():
                with torch.inference_mode(), autocast("cpu", "bf16"):
                    tokens = theirs.forward_features(images)[:, theirs.num_prefix_tokens:].float()
                return tokens.transpose(1, 2).reshape(1, -1, SIZE[0] // 16, SIZE[1] // 16)

            def torch_attention():
                with mock.patch("pe_dense.ops.dot_product_attention.bf16_kernel_preferred", return_value=False):
                    return dense(ours, images, "bf16")

            runs = {"fp32": lambda: dense(ours, images, "fp32"), "bf16": lambda: dense(ours, images, "bf16"),
                    "bf16_weights": lambda: dense(weights_bf16, images.bfloat16(), "fp32"), "timm_bf16": timm_dense}
            if bf16_kernel_preferred():  # elsewhere "bf16" already is torch's attention
                runs["bf16_torch_attention"] = torch_attention
            return runs

        runs = ways()
        reference = runs["fp32"]()
        errors = {n: _error(runs[n](), reference) for n in runs if n != "fp32"}
        seconds = harness.time_interleaved(runs, torch.device("cpu"), repeats=repeats)
        row = {"model": name, "input": list(SIZE), "batch": 1,
               "images_per_s": {n: round(1 / t, 3) for n, t in seconds.items()},
               "speedup_vs_fp32": {n: round(seconds["fp32"] / t, 2) for n, t in seconds.items()},
               "feature_error_vs_fp32": errors}
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["PE-Spatial-T16-512", "PE-Spatial-S16-512"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not cpu_supports_bf16():
        raise SystemExit("this CPU has no native bf16 (AVX512-BF16 or AMX): nothing to measure")
    results = {"benchmark": "cpu_bf16", "environment": harness.environment(torch.device("cpu")),
               "results": run(args.models, args.repeats)}
    print("saved", harness.save("cpu_bf16", results))


if __name__ == "__main__":
    main()
