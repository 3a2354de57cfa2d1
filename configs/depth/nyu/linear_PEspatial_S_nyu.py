# NYU-Depth-v2 frozen linear depth probe of PE-Spatial-S16-512: blocks (2, 5, 8, 11) (of 12), 256 bins.
# Settings and what is our choice: ../_base_/linear_bins.py and ../_base_/nyu.py.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/nyu.py", "../_base_/linear_bins.py"]
model = dict(
    backbone=dict(model="PE-Spatial-S16-512", out_indices=(2, 5, 8, 11)),
    decode_head=dict(in_channels=[384] * 4),
)
