# DPT on the built-in depth scenes (CPU, under 5 minutes), the demo of `make depth-demo`: the first 6 blocks of
# PE-Spatial-T16, trained from random weights (unless model.backbone.weights is set), with a narrow DPT decoder.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/pe_depth_scenes.py", "../_base_/dpt.py"]
model = dict(
    backbone=dict(model="PE-Spatial-T16-512", weights=None, keep_blocks=6, out_indices=(1, 2, 4, 5),
                  output_cls_token=False, drop_path_rate=0.0),
    decode_head=dict(in_channels=192, channels=64, post_process_channels=[24, 48, 96, 192], readout_type="ignore",
                     norm_cfg=dict(type="BN")),
)
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.01), paramwise_cfg=dict(decay_rate=1.0))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=50, end=600),
]
train_cfg = dict(max_iters=600, val_interval=600)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=300))
env_cfg = dict(cudnn_benchmark=False)
