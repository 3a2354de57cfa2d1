# UperNet fine-tuning of a PE, as mmseg fine-tunes plain ViTs (BEiT/MAE recipe): maps of four blocks made
# into strides 4/8/16/32 by MultiLevelNeck, UPerHead, an FCN auxiliary head on the last map, AdamW lr 6e-5
# with layer-wise lr decay 0.65, weight decay 0.01 (none on biases, norms and embeddings), 1500 warm-up
# iterations then poly decay over 160k iterations at batch 16, sliding-window evaluation over 512 crops.
# All of it is our choice: PE published no segmentation fine-tuning recipe.
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_val=0, seg_pad_val=255, size_divisor=16, test_cfg=dict(size_divisor=16)),
    backbone=dict(type="PEBackbone", model="PE-Spatial-B16-512", weights="hub", out_indices=(2, 5, 8, 11),
                  drop_path_rate=0.1, with_cp=False),
    neck=dict(type="MultiLevelNeck", in_channels=[768] * 4, out_channels=768, scales=[4, 2, 1, 0.5]),
    decode_head=dict(type="UPerHead", in_channels=[768] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                     channels=512, dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(type="FCNHead", in_channels=768, in_index=3, channels=256, num_convs=1, concat_input=False,
                        dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg, align_corners=False,
                        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode="slide", crop_size=(512, 512), stride=(341, 341)),
)
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    constructor="PELayerDecayOptimizerConstructor",
    paramwise_cfg=dict(decay_rate=0.65),  # over the backbone's blocks, read from the model
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=160000, val_interval=16000)
