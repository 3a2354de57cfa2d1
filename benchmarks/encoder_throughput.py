"""Encoder throughput: pe_dense vs timm's vit_pe_* (the best available alternative), same weights,
same process, same inputs. Prints images/s and the ratio, and saves them under benchmarks/results/.

    python benchmarks/encoder_throughput.py                       # CPU, fp32, T and B at 512, batch 1 and 8
    python benchmarks/encoder_throughput.py --device cuda --dtype bf16 --batch-sizes 32
"""

from __future__ import annotations

import argparse
import contextlib

import harness
import torch

from pe_dense.models import build_encoder, get_config, official_to_timm

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_pair(name: str, device: torch.device):
    import timm

    config = get_config(name)
    ours = build_encoder(config)
    theirs = timm.create_model(config.timm_name, pretrained=False, img_size=config.image_size)
    theirs.load_state_dict(official_to_timm(ours.state_dict()))
    return config, ours.to(device).eval(), theirs.to(device).eval()


def run(args) -> dict:
    device = torch.device(args.device)
    results = []
    for name in args.models:
        config, ours, theirs = make_pair(name, device)
        for batch in args.batch_sizes:
            images = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
            dtype = DTYPES[args.dtype]
            autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext

            def forward(model):
                with torch.inference_mode(), autocast():
                    return model.forward_features(images)

            gap = (forward(ours).float() - forward(theirs).float()).abs().max().item()
            tolerance = 1e-4 if dtype is None else 0.25
            if gap > tolerance:
                raise SystemExit(f"{name}: outputs differ by {gap}; the comparison would be meaningless")
            seconds = harness.time_interleaved({"pe_dense": lambda: forward(ours), "timm": lambda: forward(theirs)},
                                               device, repeats=args.repeats)
            row = {
                "model": name, "batch": batch, "size": config.image_size, "dtype": args.dtype,
                "pe_dense_images_per_s": batch / seconds["pe_dense"], "timm_images_per_s": batch / seconds["timm"],
                "speedup_vs_timm": seconds["timm"] / seconds["pe_dense"], "max_abs_diff": gap,
            }
            if device.type == "cuda":
                row["pe_dense_peak_mib"] = harness.peak_memory(lambda: forward(ours), device) / 2**20
                row["timm_peak_mib"] = harness.peak_memory(lambda: forward(theirs), device) / 2**20
            results.append(row)
            print(f"{name:<20} batch {batch:>3} {args.dtype}: pe_dense {row['pe_dense_images_per_s']:8.2f} img/s, "
                  f"timm {row['timm_images_per_s']:8.2f} img/s, ratio {row['speedup_vs_timm']:.3f}", flush=True)
    return {"benchmark": "encoder_throughput", "environment": harness.environment(device), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["PE-Spatial-T16-512", "PE-Spatial-B16-512"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", help="results name (default: encoder_throughput_<device>_<dtype>)")
    args = parser.parse_args()
    payload = run(args)
    device_type = torch.device(args.device).type
    path = harness.save(args.output or f"encoder_throughput_{device_type}_{args.dtype}", payload)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
