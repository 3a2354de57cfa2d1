"""Features of a folder of photos: the extractor of ``pe-dense features`` against the plain loop, same images.

The plain loop is what one writes by hand: for each file, PIL load, preprocess, the model on a batch of one
(it stores nothing). The extractor decodes and resizes in DataLoader worker processes (1 and 2) while the
model runs batches, and writes fp32 shards. Both see the same JPEG files (640x480, written first) and the
same random-weight model, timed in alternation; the peak resident memory of the main process (workers not
counted) is measured in a fresh process per variant. Also: the stored bytes per item, fp32 and fp16.

    python benchmarks/extract.py [--images 200] [--model PE-Spatial-T16-512] [--size 224] [--repeats 1] [--threads N]
    python benchmarks/extract.py --device cuda --model PE-Spatial-B16-512 --size 512 --batch-size 16

``--threads`` sets torch's threads in the main process (the workers run one each): on a busy machine torch's
OpenMP threads wait for each other when one is descheduled, which hides what is measured.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import harness
import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from pe_dense.feature_extraction import Resize, list_items, run_shards
from pe_dense.models import build_encoder, get_config, load_image, preprocess


def write_photos(folder: Path, count: int) -> None:
    """Smooth random pictures (upsampled noise) as JPEGs, so decoding costs what a photo's does."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
        small.resize((640, 480), Image.BICUBIC).save(folder / f"{i:04d}.jpg", quality=90)


def _encoder(model: str, device: str):
    torch.manual_seed(0)
    return build_encoder(model, device=device)


def setup(variant: str, folder: str, model: str, size: int, batch_size: int, threads: int, device: str,
          dtype: str = "fp32"):
    """The step of one variant on every image of ``folder``: "plain loop" or "extractor N workers"."""
    if threads:
        torch.set_num_threads(threads)
    encoder = _encoder(model, device)
    paths = sorted(Path(folder).glob("*.jpg"))
    if variant == "plain loop":
        def plain():
            with torch.inference_mode():
                for path in paths:
                    encoder.dense_features(preprocess(load_image(path), size)[None].to(device)).cpu()
        return plain
    workers = int(variant.split()[1])
    items, _ = list_items([folder])
    resize = Resize(get_config(model).patch_size, size=(size, size))

    def extractor():
        with tempfile.TemporaryDirectory() as out:
            header = {"model": model, "dtype": dtype, "precision": "fp32"}
            run_shards(encoder, items, Path(out), header, resize=resize, layers=[-1], batch_size=batch_size,
                       shard_size=128, workers=workers, progress=False)
            return sum(p.stat().st_size for p in Path(out).rglob("*.safetensors")) / len(items)
    return extractor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", default="PE-Spatial-T16-512")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the main process (0: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        write_photos(folder, args.images)
        common = (str(folder), args.model, args.size, args.batch_size, args.threads, args.device)
        variants = {name: (name, *common) for name in ("plain loop", "extractor 1 workers", "extractor 2 workers")}
        timed = harness.time_variants(setup, variants, device, repeats=args.repeats)
        stored = {dtype: setup("extractor 0 workers", *common, dtype)() for dtype in ("fp32", "fp16")}
        # the store holds what the plain loop computes
        store_check = _same_as_plain(folder, *common[1:])
        threads = torch.get_num_threads() if not args.threads else args.threads
    items_per_second = {k: round(args.images / v, 2) for k, v in timed["seconds_per_iteration"].items()}
    results = {
        "environment": harness.environment(device),
        "model": args.model, "size": args.size, "images": args.images, "batch_size": args.batch_size,
        "main_process_threads": threads,
        "items_per_second": items_per_second,
        "speedup_vs_plain_loop": {k: round(v / items_per_second["plain loop"], 2) for k, v in items_per_second.items()
                                  if k != "plain loop"},
        "peak_memory_mib": timed["peak_memory_mib"],  # on the CPU: the main process's
        "stored_bytes_per_item": {k: round(v) for k, v in stored.items()},
        "max_abs_difference_to_plain_loop": store_check,
    }
    harness.report(f"extract_{args.model.split('-')[2]}_{device.type}", results)


def _same_as_plain(folder: Path, model: str, size: int, batch_size: int, threads: int, device: str) -> float:
    encoder = _encoder(model, device)
    path = sorted(folder.glob("*.jpg"))[0]
    with tempfile.TemporaryDirectory() as out:
        items, _ = list_items([str(path)])
        run_shards(encoder, items, Path(out), {"model": model, "dtype": "fp32", "precision": "fp32"},
                   resize=Resize(get_config(model).patch_size, size=(size, size)), layers=[-1],
                   batch_size=batch_size, shard_size=128, progress=False)
        [tensor] = load_file(next(Path(out).rglob("*.safetensors"))).values()
    with torch.inference_mode():
        plain = encoder.dense_features(preprocess(load_image(path), size)[None].to(device))[0].cpu()
    return float((tensor - plain).abs().max())


if __name__ == "__main__":
    main()
