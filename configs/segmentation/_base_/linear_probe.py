# The frozen-feature linear probe of the PE paper's ADE20k table, as DINOv2 runs it: a frozen PE, the map
# after its last block, BatchNorm + 1x1 conv to the classes, bilinear upsampling, single scale.
# Published: the frozen backbone, the last layer, the linear head and single-scale mIoU. Our choice
# (DINOv2's settings, PE did not publish its own): AdamW lr 1e-3, weight decay 1e-4, 1500 warm-up iterations
# then poly decay over 40k iterations at batch 16, sliding-window evaluation over 512 crops.
# Inputs are mapped to [-1, 1] as PE was trained (RGB, mean 127.5, std 127.5) and padded to a multiple of
# the patch size (padding is ignored by the loss and cut off the predictions).
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_val=0, seg_pad_val=255, size_divisor=16, test_cfg=dict(size_divisor=16)),
    backbone=dict(type="PEBackbone", model="PE-Spatial-B16-512", weights="hub", out_indices=(-1,), frozen=True),
    decode_head=dict(type="LinearProbeHead", in_channels=768, num_classes=150, norm_cfg=norm_cfg,
                     loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode="slide", crop_size=(512, 512), stride=(341, 341)),
)
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=40000),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=40000, val_interval=4000)
