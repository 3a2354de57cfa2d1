# ADE20k (SceneParse150) as mmsegmentation reads it: <data_root>/images/{training,validation}/*.jpg and
# annotations/*.png (0 = other, ignored). The pipelines are mmseg's standard ADE20k ones (512x512 crops,
# scale jitter 0.5-2 of a 2048x512 base, flips, photometric distortion; test at short side 512) with
# loading transforms that name a bad file. Patch-14 configs change crop_size (see their files).
dataset_type = "ADE20KDataset"
data_root = "data/ade/ADEChallengeData2016"
num_classes = 150
crop_size = (512, 512)
train_pipeline = [
    dict(type="LoadCheckedImage"),
    dict(type="LoadCheckedAnnotations", num_classes=num_classes),
    dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadCheckedImage"),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="LoadCheckedAnnotations", num_classes=num_classes),  # after Resize: scored at the label's size
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=2,  # per GPU; 8 GPUs make mmseg's usual batch of 16
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
                 pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator
