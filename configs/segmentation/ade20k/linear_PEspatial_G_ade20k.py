# ADE20k linear probe of PE-Spatial-G14-448 (frozen, last block); the PE paper reports 49.3 mIoU.
# Settings and what is our choice: ../_base_/linear_probe.py.
# Patch 14: 512 crops are padded to 518 (37 tokens, as DINOv2 pads); sliding windows are 518 (our choice).
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/ade20k.py", "../_base_/linear_probe.py"]
model = dict(
    data_preprocessor=dict(size_divisor=14, test_cfg=dict(size_divisor=14)),
    backbone=dict(model="PE-Spatial-G14-448"),
    decode_head=dict(in_channels=1536),
    test_cfg=dict(crop_size=(518, 518), stride=(345, 345)),
)
