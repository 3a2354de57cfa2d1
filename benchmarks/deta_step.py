"""One DETA training iteration (forward, backward, optimiser step) with pe_dense's compiled deformable
attention vs the pure-PyTorch reference, inside the same detector.

Both variants are the same model with the same weights and batch; only ``MSDeformAttn.use_kernel``
differs, so the ratio is what the kernel is worth to a whole detector. The losses of both are
checked equal before timing.

    python benchmarks/deta_step.py                        # tiny shapes config, batch 8 at 256 px, CPU
    python benchmarks/deta_step.py --recipe G --device cuda   # PE-Spatial-G DETA at 1024 px, batch 1

Peak memory: CUDA's allocator peak on a GPU; on the CPU the resident-memory peak of one iteration
above the model and inputs (measured in a separate process).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from detection_step import _batch  # noqa: E402  (shapes images with their instances)

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    # config, batch size, image size, overrides
    "tiny": ("projects/DETA/configs/shapes/deta_PEspatial_T_shapes.py", 8, 256, []),
    "G": ("projects/DETA/configs/deta_PEspatial_G_coco_1824.py", 1, 1024, ["model.backbone.square_pad=1024"]),
}
VARIANTS = {"pe_dense kernel": None, "pure-PyTorch reference": False}


def setup_step(recipe: str, variant: str, device: str):
    """A function running one training iteration, and the model (module level: it runs in a spawned
    process for CPU memory peaks)."""
    from detectron2.config import LazyConfig, instantiate
    from detectron2.utils.events import EventStorage

    import pe_dense.integrations.detectron2  # noqa: F401  (registers the datasets the configs name)
    from pe_dense.ops import MSDeformAttn

    config, count, size, overrides = RECIPES[recipe]
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(REPO / config)), overrides)
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.use_kernel = VARIANTS[variant]
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    batch = _batch(count, size)
    storage = EventStorage(0)

    def step():
        with storage:
            loss = sum(model(batch).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def losses():
        torch.manual_seed(1)  # the assigners sample at random
        with storage, torch.no_grad():
            return {k: v.item() for k, v in model(batch).items()}

    return step, losses


def _step_only(recipe, variant, device):
    return setup_step(recipe, variant, device)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    built = {name: setup_step(args.recipe, name, args.device) for name in VARIANTS}
    reference, kernel = built["pure-PyTorch reference"][1](), built["pe_dense kernel"][1]()
    for key, value in reference.items():
        if abs(kernel[key] - value) > 1e-4 * max(1.0, abs(value)):
            raise SystemExit(f"{key} differs: kernel {kernel[key]} vs reference {value}")
    steps = {name: step for name, (step, _) in built.items()}
    seconds = harness.time_interleaved(steps, device, repeats=args.repeats)
    if device.type == "cuda":
        memory = {name: harness.peak_memory(step, device) for name, step in steps.items()}
    else:
        memory = {name: harness.cpu_peak_extra_bytes(_step_only, args.recipe, name, args.device) for name in VARIANTS}
    config, count, size, _ = RECIPES[args.recipe]
    base = "pe_dense kernel"
    results = {
        "environment": harness.environment(device),
        "recipe": {"config": config, "batch": count, "image_size": size},
        "losses_checked_equal": True,
        "seconds_per_iteration": {k: round(v, 3) for k, v in seconds.items()},
        "peak_memory_mib": {k: round(v / 2**20) for k, v in memory.items()},
        "reference_time_over_kernel": round(seconds["pure-PyTorch reference"] / seconds[base], 2),
        "reference_memory_over_kernel": round(memory["pure-PyTorch reference"] / memory[base], 2),
    }
    for key in ("seconds_per_iteration", "peak_memory_mib", "reference_time_over_kernel",
                "reference_memory_over_kernel"):
        print(f"{key}: {results[key]}")
    print("saved", harness.save(f"deta_step_{args.recipe}_{device.type}", results))


if __name__ == "__main__":
    main()
