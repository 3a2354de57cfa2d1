# The linear probe on the built-in scenes (CPU, seconds): a frozen PE-Spatial-T16 (random weights unless
# model.backbone.weights is set), its last block, BatchNorm + 1x1 conv. With random weights it shows the
# mechanics, and must beat always predicting the most frequent class.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/pe_scenes.py", "../_base_/linear_probe.py"]
model = dict(
    backbone=dict(model="PE-Spatial-T16-512", weights=None),
    decode_head=dict(in_channels=192, num_classes=9, norm_cfg=dict(type="BN", requires_grad=True)),
    test_cfg=dict(mode="whole"),
)
param_scheduler = [dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=300)]
train_cfg = dict(max_iters=300, val_interval=300)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=300))
env_cfg = dict(cudnn_benchmark=False)
