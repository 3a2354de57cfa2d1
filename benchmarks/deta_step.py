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

from pathlib import Path

import harness
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    # config, batch size, image size, overrides
    "tiny": ("projects/DETA/configs/shapes/deta_PEspatial_T_shapes.py", 8, 256, []),
    "G": ("projects/DETA/configs/deta_PEspatial_G_coco_1824.py", 1, 1024, ["model.backbone.square_pad=1024"]),
}
VARIANTS = {"pe_dense kernel": None, "pure-PyTorch reference": False}


def setup_step(recipe: str, variant: str, device: str):
    """A function running one training iteration, whose ``losses()`` gives the losses of a fixed forward pass
    (module level: it runs in a spawned process for CPU memory peaks)."""
    from detectron2.config import LazyConfig, instantiate
    from detectron2.utils.events import EventStorage

    from pe_dense.integrations.detectron2 import shapes_batch  # also registers the datasets the configs name
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
    batch = shapes_batch(count, size)
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

    step.losses = losses
    return step


def check_losses_equal(steps: dict) -> None:
    reference, kernel = steps["pure-PyTorch reference"].losses(), steps["pe_dense kernel"].losses()
    for key, value in reference.items():
        if abs(kernel[key] - value) > 1e-4 * max(1.0, abs(value)):
            raise SystemExit(f"{key} differs: kernel {kernel[key]} vs reference {value}")


def main():
    args = harness.step_arguments(__doc__.splitlines()[0], RECIPES, "tiny").parse_args()
    device = torch.device(args.device)
    measured = harness.time_variants(setup_step, {name: (args.recipe, name, args.device) for name in VARIANTS},
                                     device, args.repeats, check=check_losses_equal)
    config, count, size, _ = RECIPES[args.recipe]
    harness.report(f"deta_step_{args.recipe}_{device.type}", {
        "environment": harness.environment(device),
        "recipe": {"config": config, "batch": count, "image_size": size},
        "losses_checked_equal": True,
        **measured,
        "reference_time_over_kernel": harness.ratios(measured["seconds_per_iteration"], "pe_dense kernel"),
        "reference_memory_over_kernel": harness.ratios(measured["peak_memory_mib"], "pe_dense kernel"),
    })


if __name__ == "__main__":
    main()
