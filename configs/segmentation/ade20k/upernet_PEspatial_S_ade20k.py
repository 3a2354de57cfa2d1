# ADE20k UperNet fine-tuning of PE-Spatial-S16-512: blocks (2, 5, 8, 11) feed the four scales, drop path 0.1
# (our choice, after ViTDet's rates for this depth). Settings and what is our choice: ../_base_/upernet.py.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/ade20k.py", "../_base_/upernet.py"]
model = dict(
    backbone=dict(model="PE-Spatial-S16-512", out_indices=(2, 5, 8, 11), drop_path_rate=0.1),
    neck=dict(in_channels=[384] * 4, out_channels=384),
    decode_head=dict(in_channels=[384] * 4),
    auxiliary_head=dict(in_channels=384),
)
