# UperNet on the built-in scenes (CPU, minutes), the demo of `make seg-demo`: the first 6 blocks of
# PE-Spatial-T16, trained from random weights (unless model.backbone.weights is set), with a narrow UPerHead.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/pe_scenes.py", "../_base_/upernet.py"]
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    backbone=dict(model="PE-Spatial-T16-512", weights=None, keep_blocks=6, out_indices=(1, 2, 4, 5),
                  drop_path_rate=0.0),
    neck=dict(in_channels=[192] * 4, out_channels=64),
    decode_head=dict(in_channels=[64] * 4, channels=64, num_classes=9, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=32, num_classes=9, norm_cfg=norm_cfg),
    test_cfg=dict(mode="whole"),
)
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.01), paramwise_cfg=dict(decay_rate=1.0))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=50, end=600),
]
train_cfg = dict(max_iters=600, val_interval=600)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=300))
env_cfg = dict(cudnn_benchmark=False)
