"""Depth with mmsegmentation: one training iteration of the linear-bins probe and of DPT on the same PE,
and inference images/s at NYU's 480x640.

Three training variants share the encoder of the NYU configs: the frozen linear probe (linear_*_nyu.py),
DPT on the same frozen encoder (the heads' own cost), and DPT fine-tuning the encoder (dpt_*_nyu.py),
each on a batch of two 480x480 crops; ratios are against the linear probe.

    python benchmarks/depth_step.py                       # PE-Spatial-T16, CPU
    python benchmarks/depth_step.py --model L --device cuda --amp

Peak memory: CUDA's allocator peak on a GPU; on the CPU the resident-memory peak of one iteration
above the model and inputs (measured in a separate process).
"""

from __future__ import annotations

from pathlib import Path

import harness
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"linear": "configs/depth/nyu/linear_PEspatial_{}_nyu.py", "DPT": "configs/depth/nyu/dpt_PEspatial_{}_nyu.py"}
VARIANTS = {"linear (frozen)": ("linear", True), "DPT (frozen)": ("DPT", True), "DPT (fine-tuned)": ("DPT", False)}
CROP, BATCH, NYU_SIZE = 480, 2, (480, 640)


def _model(model: str, head: str, frozen: bool, device: str):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import pe_dense.integrations.mmseg  # noqa: F401  (registers PE's modules)

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(REPO / CONFIGS[head].format(model)))
    cfg.model.backbone.update(weights=None, frozen=frozen)
    if "norm_cfg" in cfg.model.decode_head:
        cfg.model.decode_head.norm_cfg = dict(type="BN", requires_grad=True)  # SyncBN needs a process group
    return cfg, MODELS.build(cfg.model).to(device)


def _batch(count: int, height: int, width: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator) for _ in range(count)]
    samples = []
    for _ in range(count):
        shape = (height, width)
        sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape))
        sample.gt_depth_map = PixelData(data=torch.rand(1, height, width, generator=generator) * 9.5 + 0.5)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def setup_step(model: str, variant: str, device: str, amp: bool):
    """A function running one training iteration (module level: it runs in a spawned process for CPU peaks)."""
    from mmengine.optim import build_optim_wrapper

    torch.manual_seed(0)
    head, frozen = VARIANTS[variant]
    cfg, net = _model(model, head, frozen, device)
    net.train()
    wrapper_cfg = dict(cfg.optim_wrapper)
    if amp:
        wrapper_cfg.update(type="AmpOptimWrapper", dtype="bfloat16")
    optim = build_optim_wrapper(net, wrapper_cfg)
    batch = _batch(BATCH, CROP, CROP)

    def step():
        net.train_step(batch, optim)

    return step


def setup_inference(model: str, head: str, device: str, amp: bool):
    _, net = _model(model, head, True, device)
    net.eval()
    batch = _batch(1, *NYU_SIZE)

    def infer():
        with torch.no_grad(), torch.autocast(torch.device(device).type, torch.bfloat16, enabled=amp):
            net.test_step(batch)

    return infer


def main():
    parser = harness.step_arguments(__doc__.splitlines()[0], dict.fromkeys("TSBLG"), "T", option="--model")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    args = parser.parse_args()
    device = torch.device(args.device)
    measured = harness.time_variants(setup_step, {name: (args.model, name, args.device, args.amp)
                                                  for name in VARIANTS}, device, args.repeats)
    inference = {head: setup_inference(args.model, head, args.device, args.amp) for head in CONFIGS}
    per_image = harness.time_interleaved(inference, device, repeats=args.repeats)
    base = "linear (frozen)"
    harness.report(f"depth_step_{args.model}_{device.type}{'_amp' if args.amp else ''}", {
        "environment": harness.environment(device),
        "setting": {"configs": {k: v.format(args.model) for k, v in CONFIGS.items()}, "batch": BATCH, "crop": CROP,
                    "inference_size": list(NYU_SIZE), "amp": args.amp},
        **measured,
        "time_ratio_vs_linear": harness.ratios(measured["seconds_per_iteration"], base),
        "memory_ratio_vs_linear": harness.ratios(measured["peak_memory_mib"], base),
        "inference_images_per_s_480x640": {k: round(1 / v, 2) for k, v in per_image.items()},
    })


if __name__ == "__main__":
    main()
