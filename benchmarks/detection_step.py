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

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

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


def _batch(count: int, size: int):
    """Shapes images with their instances, already in the model's input format."""
    from detectron2.structures import BitMasks, Boxes, Instances

    from pe_dense.data.shapes import render_shapes_image

    batch = []
    for index in range(count):
        image, instances = render_shapes_image(index, seed=0, size=size)
        masks = torch.stack([torch.from_numpy(i["mask"]) for i in instances])
        target = Instances((size, size))
        target.gt_masks = BitMasks(masks)
        target.gt_boxes = Boxes(target.gt_masks.get_bounding_boxes().tensor)
        target.gt_classes = torch.tensor([i["category"] for i in instances])
        batch.append({"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "instances": target})
    return batch


def setup_step(recipe: str, backbone: str, act_checkpoint: bool, device: str):
    """A function running one training iteration of the chosen detector (module level: it runs in a
    spawned process for CPU memory peaks)."""
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    cfg = _cfg(recipe, act_checkpoint)
    if backbone == "detectron2 ViT":
        cfg = _vitdet_backbone(cfg)
    model = instantiate(cfg.model).to(device).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    _, count, size = RECIPES[recipe]
    batch = _batch(count, size)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = {
        "PE": ("PE", False),
        "PE + activation checkpointing": ("PE", True),
        "detectron2 ViT": ("detectron2 ViT", False),
    }
    steps = {name: setup_step(args.recipe, backbone, ckpt, args.device) for name, (backbone, ckpt) in variants.items()}
    seconds = harness.time_interleaved(steps, device, repeats=args.repeats)
    if device.type == "cuda":
        memory = {name: harness.peak_memory(step, device) for name, step in steps.items()}
    else:
        memory = {name: harness.cpu_peak_extra_bytes(setup_step, args.recipe, backbone, ckpt, args.device)
                  for name, (backbone, ckpt) in variants.items()}
    _, count, size = RECIPES[args.recipe]
    results = {
        "environment": harness.environment(device),
        "recipe": {"config": RECIPES[args.recipe][0], "batch": count, "image_size": size, "amp": device.type == "cuda"},
        "seconds_per_iteration": {k: round(v, 3) for k, v in seconds.items()},
        "peak_memory_mib": {k: round(v / 2**20) for k, v in memory.items()},
        "time_ratio_vs_PE": {k: round(v / seconds["PE"], 2) for k, v in seconds.items() if k != "PE"},
        "memory_ratio_vs_PE": {k: round(v / memory["PE"], 2) for k, v in memory.items() if k != "PE"},
    }
    for key in ("seconds_per_iteration", "peak_memory_mib", "time_ratio_vs_PE", "memory_ratio_vs_PE"):
        print(f"{key}: {results[key]}")
    print("saved", harness.save(f"detection_step_{args.recipe}_{device.type}", results))


if __name__ == "__main__":
    main()
