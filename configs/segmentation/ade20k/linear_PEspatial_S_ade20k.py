# ADE20k linear probe of PE-Spatial-S16-512 (frozen, last block); the PE paper reports 37.5 mIoU.
# Settings and what is our choice: ../_base_/linear_probe.py.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/ade20k.py", "../_base_/linear_probe.py"]
model = dict(
    backbone=dict(model="PE-Spatial-S16-512"),
    decode_head=dict(in_channels=384),
)
