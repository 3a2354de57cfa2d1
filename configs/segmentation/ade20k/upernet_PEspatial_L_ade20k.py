# ADE20k UperNet fine-tuning of PE-Spatial-L14-448: blocks (5, 11, 17, 23) feed the four scales, drop path 0.2
# (our choice, after ViTDet's rates for this depth). Settings and what is our choice: ../_base_/upernet.py.
# Patch 14: 512 crops are padded to 518 (37 tokens, as DINOv2 pads); sliding windows are 518 (our choice).
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/ade20k.py", "../_base_/upernet.py"]
model = dict(
    data_preprocessor=dict(size_divisor=14, test_cfg=dict(size_divisor=14)),
    backbone=dict(model="PE-Spatial-L14-448", out_indices=(5, 11, 17, 23), drop_path_rate=0.2, with_cp=True),
    neck=dict(in_channels=[1024] * 4, out_channels=1024),
    decode_head=dict(in_channels=[1024] * 4),
    auxiliary_head=dict(in_channels=1024),
    test_cfg=dict(crop_size=(518, 518), stride=(345, 345)),
)
