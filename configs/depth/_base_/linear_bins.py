# The frozen-feature depth probe as DINOv2 runs it ("lin. 4"): a frozen PE, its maps after four evenly spaced
# blocks, each with the class token concatenated to every position, upsampled x4 (bilinear), BatchNorm and a 1x1
# conv classifying each position into 256 depth bins spaced evenly over [0.001, 10] m; the depth is the
# score-weighted average of the bins (always inside the range). SiLog loss. The whole image at test time.
# Published (DINOv2's protocol): the frozen backbone, the four layers with the class token, 256 uniform bins,
# the depth range. Our choice (PE published no depth recipe): softmax bin weights (DINOv2's code also offers
# ReLU-normalised ones, bin_weights="linear"), AdamW lr 1e-3, weight decay 1e-4, 1500 warm-up iterations, then
# poly decay over 38400 iterations at batch 16.
# Inputs are mapped to [-1, 1] as PE was trained and padded to a multiple of the patch size with depth 0
# (seg_pad_val=0: no ground truth there; mmseg's default 255 would read as 255 m).
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    type="DepthEstimator",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_val=0, seg_pad_val=0, size_divisor=16, test_cfg=dict(size_divisor=16)),
    backbone=dict(type="PEBackbone", model="PE-Spatial-B16-512", weights="hub", out_indices=(2, 5, 8, 11), frozen=True,
                  output_cls_token=True),
    decode_head=dict(type="LinearBinsDepthHead", in_channels=[768] * 4, in_index=[0, 1, 2, 3], num_bins=256,
                     cls_token=True, upsample=4, min_depth=1e-3, max_depth=10.0, norm_cfg=norm_cfg,
                     loss_decode=dict(type="SiLogLoss")),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=38400),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=38400, val_interval=3840)
