# NYU-Depth-v2 DPT fine-tuning of PE-Spatial-L14-448: blocks (5, 11, 17, 23) (of 24), drop path 0.2 (our choice).
# Patch 14: 480x480 crops and 480x640 test images are padded to multiples of 14 (depth 0 there).
# Settings and what is our choice: ../_base_/dpt.py and ../_base_/nyu.py.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/nyu.py", "../_base_/dpt.py"]
model = dict(
    data_preprocessor=dict(size_divisor=14, test_cfg=dict(size_divisor=14)),
    backbone=dict(model="PE-Spatial-L14-448", out_indices=(5, 11, 17, 23), drop_path_rate=0.2),
    decode_head=dict(in_channels=1024, post_process_channels=[128, 256, 512, 1024]),
)
