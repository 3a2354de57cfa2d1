"""Segmentation with mmsegmentation: one UperNet training iteration with the PE backbone vs mmseg's own
``VisionTransformer`` of the same shape, and inference images/s in whole vs sliding-window mode.

The alternative is the same segmentor (MultiLevelNeck, UPerHead, FCN auxiliary head, AdamW; PE's layer
decay only for the PE backbone) whose backbone is mmseg's ViT with PE's width, depth, heads, MLP width and output blocks
(learned position table resized bicubically, no RoPE), so the ratio isolates the backbone.

    python benchmarks/segmentation_step.py                    # PE-Spatial-T16 UperNet, batch 2 at 512, CPU
    python benchmarks/segmentation_step.py --recipe B --device cuda --amp
    python benchmarks/segmentation_step.py --recipe G-linear --device cuda --amp   # frozen G probe at 448 and 518

Peak memory: CUDA's allocator peak on a GPU; on the CPU the resident-memory peak of one iteration
above the model and inputs (measured in a separate process).
"""

from __future__ import annotations

from pathlib import Path

import harness
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    # config, batch size, crop sizes
    "T": ("configs/segmentation/ade20k/upernet_PEspatial_T_ade20k.py", 2, (512,)),
    "B": ("configs/segmentation/ade20k/upernet_PEspatial_B_ade20k.py", 2, (512,)),
    "G-linear": ("configs/segmentation/ade20k/linear_PEspatial_G_ade20k.py", 2, (448, 518)),
}


def _cfg(recipe: str, backbone: str):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import pe_dense.integrations.mmseg  # noqa: F401  (registers PE's modules)
    from pe_dense.models import get_config

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(REPO / RECIPES[recipe][0]))
    cfg.model.backbone.weights = None
    for head in ("decode_head", "auxiliary_head"):
        if head in cfg.model:
            cfg.model[head].norm_cfg = dict(type="BN", requires_grad=True)
    if backbone == "mmseg ViT":
        pe = get_config(cfg.model.backbone.model)
        cfg.model.backbone = dict(
            type="VisionTransformer", img_size=RECIPES[recipe][2][0], patch_size=pe.patch_size, embed_dims=pe.width,
            num_layers=pe.depth, num_heads=pe.heads, mlp_ratio=pe.mlp_width // pe.width, qkv_bias=True,
            out_indices=tuple(i % pe.depth for i in cfg.model.backbone.out_indices),
            drop_path_rate=cfg.model.backbone.get("drop_path_rate", 0.0), with_cls_token=True, final_norm=False,
            norm_cfg=dict(type="LN", eps=1e-5), act_cfg=dict(type="GELU"), interpolate_mode="bicubic",
            with_cp=cfg.model.backbone.get("with_cp", False))
    return cfg


def _batch(count: int, size: int, num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator) for _ in range(count)]
    samples = []
    for _ in range(count):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size), generator=generator))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def setup_step(recipe: str, backbone: str, size: int, device: str, amp: bool):
    """A function running one training iteration (module level: it runs in a spawned process for CPU peaks)."""
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    torch.manual_seed(0)
    cfg = _cfg(recipe, backbone)
    model = MODELS.build(cfg.model).to(device).train()
    wrapper_cfg = dict(cfg.optim_wrapper)
    if backbone == "mmseg ViT" and wrapper_cfg.get("constructor") == "PELayerDecayOptimizerConstructor":
        # PE's layer decay reads the depth from a PE backbone and keys on PE's parameter names: the ViT
        # steps the same AdamW over its parameters, without the decay groups.
        wrapper_cfg.pop("constructor")
        wrapper_cfg.pop("paramwise_cfg", None)
    if amp:
        wrapper_cfg.update(type="AmpOptimWrapper", dtype="bfloat16")
    optim = build_optim_wrapper(model, wrapper_cfg)
    batch = _batch(RECIPES[recipe][1], size, model.decode_head.num_classes)

    def step():
        model.train_step(batch, optim)

    return step


def setup_inference(recipe: str, mode: str, device: str):
    from mmseg.registry import MODELS

    cfg = _cfg(recipe, "PE")
    cfg.model.test_cfg = dict(mode=mode, crop_size=(512, 512), stride=(341, 341))
    model = MODELS.build(cfg.model).to(device).eval()
    batch = _batch(1, 512, 2)
    batch["inputs"] = [torch.randint(0, 256, (3, 512, 683), dtype=torch.uint8)]  # ADE's usual aspect
    for sample in batch["data_samples"]:
        sample.set_metainfo(dict(img_shape=(512, 683), ori_shape=(512, 683), pad_shape=(512, 683)))

    def infer():
        with torch.no_grad():
            model.test_step(batch)

    return infer


def main():
    parser = harness.step_arguments(__doc__.splitlines()[0], RECIPES, "T")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (AmpOptimWrapper)")
    args = parser.parse_args()
    device = torch.device(args.device)
    _, count, sizes = RECIPES[args.recipe]
    backbones = ["PE"] if args.recipe == "G-linear" else ["PE", "mmseg ViT"]  # mmseg's ViT has no frozen mode
    measured = harness.time_variants(setup_step, {f"{b} @ {s}": (args.recipe, b, s, args.device, args.amp)
                                                  for s in sizes for b in backbones}, device, args.repeats)
    results = {
        "environment": harness.environment(device),
        "recipe": {"config": RECIPES[args.recipe][0], "batch": count, "crop_sizes": list(sizes), "amp": args.amp},
        **measured,
    }
    if "mmseg ViT" in backbones:  # the recipes that compare backbones have one crop size
        results["time_ratio_vs_PE"] = harness.ratios(measured["seconds_per_iteration"], f"PE @ {sizes[0]}")
        results["memory_ratio_vs_PE"] = harness.ratios(measured["peak_memory_mib"], f"PE @ {sizes[0]}")
        modes = {mode: setup_inference(args.recipe, mode, args.device) for mode in ("whole", "slide")}
        per_image = harness.time_interleaved(modes, device, repeats=args.repeats)
        results["inference_images_per_s_512x683"] = {k: round(1 / v, 2) for k, v in per_image.items()}
        results["inference_slide_vs_whole_time"] = round(per_image["slide"] / per_image["whole"], 2)
    harness.report(f"segmentation_step_{args.recipe}_{device.type}{'_amp' if args.amp else ''}", results)


if __name__ == "__main__":
    main()
