# DPT fine-tuning: a PE with a DPT decoder (DINOv2's DPT depth evaluation, with the backbone trained too): maps
# after four evenly spaced blocks, each merged with the class token (readout "project"), reassembled into strides
# 4/8/16/32, fused coarse to fine, a head to one channel mapped into [0.001, 10] m by a sigmoid.
# Loss: SiLog plus gradient matching of log depth at 4 scales, weight 0.5 (DINOv2's DPT loss pair).
# All optimisation settings are our choice (PE published no depth recipe): AdamW lr 1e-4 with layer-wise lr decay
# 0.9, weight decay 0.01 (none on biases, norms and embeddings), drop path 0.1, 1500 warm-up iterations, then
# poly decay over 38400 iterations at batch 16. The whole image at test time.
# Padding carries depth 0 (seg_pad_val=0), i.e. no ground truth.
model = dict(
    type="DepthEstimator",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_val=0, seg_pad_val=0, size_divisor=16, test_cfg=dict(size_divisor=16)),
    backbone=dict(type="PEBackbone", model="PE-Spatial-B16-512", weights="hub", out_indices=(2, 5, 8, 11),
                  output_cls_token=True, drop_path_rate=0.1, with_cp=False),
    decode_head=dict(type="DPTDepthHead", in_channels=768, channels=256, post_process_channels=[96, 192, 384, 768],
                     readout_type="project", min_depth=1e-3, max_depth=10.0,
                     loss_decode=[dict(type="SiLogLoss"), dict(type="DepthGradientLoss", loss_weight=0.5)]),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    constructor="PELayerDecayOptimizerConstructor",
    paramwise_cfg=dict(decay_rate=0.9),  # over the backbone's blocks, read from the model
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=38400),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=38400, val_interval=3840)
