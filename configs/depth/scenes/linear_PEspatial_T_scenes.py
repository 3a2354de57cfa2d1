# The linear depth probe on the built-in depth scenes (CPU, seconds): a frozen PE-Spatial-T16 (random weights unless
# model.backbone.weights is set), its last block with the class token, 64 bins. With random weights it shows the
# mechanics.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/pe_depth_scenes.py", "../_base_/linear_bins.py"]
model = dict(
    backbone=dict(model="PE-Spatial-T16-512", weights=None, out_indices=(-1,)),
    decode_head=dict(in_channels=192, in_index=-1, num_bins=64, norm_cfg=dict(type="BN", requires_grad=True)),
)
param_scheduler = [dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=300)]
train_cfg = dict(max_iters=300, val_interval=300)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=300))
env_cfg = dict(cudnn_benchmark=False)
