# NYU-Depth-v2 frozen linear depth probe of PE-Spatial-G14-448: blocks (12, 24, 36, 49) (of 50), 256 bins.
# Patch 14: 480x480 crops and 480x640 test images are padded to multiples of 14 (depth 0 there).
# PE-Spatial-G14-448 has no class token: the maps alone.
# Settings and what is our choice: ../_base_/linear_bins.py and ../_base_/nyu.py.
_base_ = ["../../_base_/mmseg_runtime.py", "../_base_/nyu.py", "../_base_/linear_bins.py"]
# Imports go after `_base_`: mmengine reads a config whose imports come first as a lazy-import config.
from pe_dense.models import stage_end_blocks  # noqa: E402

model = dict(
    data_preprocessor=dict(size_divisor=14, test_cfg=dict(size_divisor=14)),
    backbone=dict(model="PE-Spatial-G14-448", out_indices=stage_end_blocks("PE-Spatial-G14-448"),
                  output_cls_token=False),
    decode_head=dict(in_channels=[1536] * 4, cls_token=False),
)
