# ADE20k UperNet fine-tuning of PE-Spatial-G14-448: blocks (12, 24, 36, 49) feed the four scales, drop path 0.4
# (our choice, after ViTDet's rates for this depth; layer decay 0.9 as in PE's detection recipe).
# Settings and what is our choice: ../_base_/upernet.py.
# Patch 14: 512 crops are padded to 518 (37 tokens, as DINOv2 pads); sliding windows are 518 (our choice).
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/ade20k.py", "../_base_/upernet.py"]
# Imports go after `_base_`: mmengine reads a config whose imports come first as a lazy-import config.
from pe_dense.models import stage_end_blocks  # noqa: E402

model = dict(
    data_preprocessor=dict(size_divisor=14, test_cfg=dict(size_divisor=14)),
    backbone=dict(model="PE-Spatial-G14-448", out_indices=stage_end_blocks("PE-Spatial-G14-448"), drop_path_rate=0.4,
                  with_cp=True),
    neck=dict(in_channels=[1536] * 4, out_channels=1536),
    decode_head=dict(in_channels=[1536] * 4),
    auxiliary_head=dict(in_channels=1536),
    test_cfg=dict(crop_size=(518, 518), stride=(345, 345)),
)
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.9))
