"""One Mask R-CNN training iteration (forward, backward, AdamW step): PE backbone vs detectron2's ViT.

The alternative is the same detector with detectron2's own ViTDet backbone (``detectron2.modeling.ViT``)
of the same width, depth, heads, window and global blocks (relative position biases instead of
RoPE), so the ratio isolates the backbone implementation. Activation checkpointing is timed too.

    python benchmarks/detection_step.py                     # tiny shapes config, batch 8 at 256 px, CPU
    python benchmarks/detection_step.py --recipe G --device cuda   # PE-Spatial-G at 1024 px, batch 1, AMP

Peak memory: CUDA's allocator peak on a GPU; on the CPU the resident-memory peak of one iteration
above the model and inputs (measured in a separate process).
"""

from __future__ import annotations

from pathlib import Path

import harness
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    # config, batch size, image size
    "tiny": ("configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py", 8, 256),
    "G": ("configs/detection/COCO/mask_rcnn_PEspatial_G_coco36ep.py", 1, 1024),
}


def _cfg(recipe: str, act_checkpoint: bool):
    from detectron2.config import LazyConfig

    import pe_dense.integrations.detectron2  # noqa: F401  (registers the datasets the configs name)

    cfg = LazyConfig.load(str(REPO / RECIPES[recipe][0]))
    cfg.model.backbone.net.use_act_checkpoint = act_checkpoint
    return cfg


def _vitdet_backbone(cfg):
    """detectron2's ViT with the PE backbone's shape, in the same pyramid. Its parameter groups are
    detectron2's defaults: PE's layer decay is keyed on PE's parameter names and gave the ViT's all 1."""
    from detectron2.config import LazyCall as L
    from detectron2.modeling import ViT
    from detectron2.solver.build import get_default_optimizer_params

    from pe_dense.models import get_config

    net = cfg.model.backbone.net
    config = get_config(net.model)
    depth = net.get("keep_blocks") or config.depth
    cfg.model.backbone.net = L(ViT)(
        img_size=cfg.model.backbone.square_pad, patch_size=16, embed_dim=config.width, depth=depth,
        num_heads=config.heads, mlp_ratio=config.mlp_width / config.width, qkv_bias=True,
        drop_path_rate=net.drop_path_rate, window_size=net.window_size,
        window_block_indexes=[i for i in range(depth) if i not in net.global_blocks], use_rel_pos=True,
        use_act_checkpoint=net.use_act_checkpoint, pretrain_img_size=224, out_feature="last_feat",
    )
    cfg.optimizer.params = L(get_default_optimizer_params)(base_lr="${..lr}", overrides={}, weight_decay_norm=None)
    return cfg


def setup_step(recipe: str, backbone: str, act_checkpoint: bool, device: str):
    """A function running one training iteration of the chosen detector (module level: it runs in a
    spawned process for CPU memory peaks)."""
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    from pe_dense.integrations.detectron2 import shapes_batch

    torch.manual_seed(0)
    cfg = _cfg(recipe, act_checkpoint)
    if backbone == "detectron2 ViT":
        cfg = _vitdet_backbone(cfg)
    model = instantiate(cfg.model).to(device).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    _, count, size = RECIPES[recipe]
    batch = shapes_batch(count, size)
    amp = device == "cuda"
    storage = EventStorage(0)

    def step():
        with storage, torch.autocast(device, dtype=torch.float16, enabled=amp):
            loss = sum(model(batch).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main():
    args = harness.step_arguments(__doc__.splitlines()[0], RECIPES, "tiny").parse_args()
    device = torch.device(args.device)
    variants = {"PE": ("PE", False), "PE + activation checkpointing": ("PE", True),
                "detectron2 ViT": ("detectron2 ViT", False)}
    measured = harness.time_variants(setup_step, {name: (args.recipe, backbone, ckpt, args.device)
                                                  for name, (backbone, ckpt) in variants.items()},
                                     device, args.repeats)
    _, count, size = RECIPES[args.recipe]
    harness.report(f"detection_step_{args.recipe}_{device.type}", {
        "environment": harness.environment(device),
        "recipe": {"config": RECIPES[args.recipe][0], "batch": count, "image_size": size, "amp": device.type == "cuda"},
        **measured,
        "time_ratio_vs_PE": harness.ratios(measured["seconds_per_iteration"], "PE"),
        "memory_ratio_vs_PE": harness.ratios(measured["peak_memory_mib"], "PE"),
    })


if __name__ == "__main__":
    main()
