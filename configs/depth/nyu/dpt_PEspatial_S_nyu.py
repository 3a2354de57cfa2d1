# NYU-Depth-v2 DPT fine-tuning of PE-Spatial-S16-512: blocks (2, 5, 8, 11) (of 12), drop path 0.1 (our choice).
# Settings and what is our choice: ../_base_/dpt.py and ../_base_/nyu.py.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/nyu.py", "../_base_/dpt.py"]
model = dict(
    backbone=dict(model="PE-Spatial-S16-512", out_indices=(2, 5, 8, 11), drop_path_rate=0.1),
    decode_head=dict(in_channels=384, post_process_channels=[48, 96, 192, 384]),
)
