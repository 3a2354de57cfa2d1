# pe_dense's built-in scenes (pe_dense.data.scenes): 9 classes in the ADE20k layout, 160x160 images,
# generated under $PE_DENSE_DATASETS/pe_scenes (default datasets/pe_scenes) on first use.
dataset_type = "PEScenesDataset"
num_classes = 9
crop_size = (128, 128)
train_pipeline = [
    dict(type="LoadCheckedImage"),
    dict(type="LoadCheckedAnnotations", num_classes=num_classes),
    dict(type="RandomResize", scale=(160, 160), ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadCheckedImage"),
    dict(type="LoadCheckedAnnotations", num_classes=num_classes),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type=dataset_type, split="training", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type=dataset_type, split="validation", pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator
