# NYU-Depth-v2 in the layout mmsegmentation's NYUDataset reads (its tools/dataset_converters/nyu.py makes it):
# <data_root>/images/{train,test}/*.jpg and annotations/{train,test}/*.png, 16-bit depth in millimetres, 0 = none.
# Training: mmseg's NYU pipeline (vertical depth mixing, flips, 480x480 crops) with PhotoMetricDistortion in place
# of its albumentations colour jitter (our choice: one dependency fewer). Evaluation, the standard protocol: the
# whole 480x640 image, ground truth in (0.001 m, 10 m) inside the Eigen crop (rows 45:471, columns 41:601),
# every DepthMetric figure (d1-d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog), averaged over the images.
dataset_type = "NYUDataset"
data_root = "data/nyu"
max_depth = 10.0
crop_size = (480, 480)
meta_keys = ("img_path", "depth_map_path", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
             "flip_direction", "category_id")
train_pipeline = [
    dict(type="LoadCheckedImage"),
    dict(type="LoadCheckedDepth", depth_rescale_factor=1e-3, max_depth=max_depth),
    dict(type="RandomDepthMix", prob=0.25),
    dict(type="RandomFlip", prob=0.5),
    dict(type="RandomCrop", crop_size=crop_size),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs", meta_keys=meta_keys),
]
test_pipeline = [
    dict(type="LoadCheckedImage"),
    dict(type="LoadCheckedDepth", depth_rescale_factor=1e-3, max_depth=max_depth),
    dict(type="PackSegInputs", meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=2,  # per GPU; 8 GPUs make a batch of 16 (our choice)
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path="images/train", depth_map_path="annotations/train"),
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, test_mode=True,
                 data_prefix=dict(img_path="images/test", depth_map_path="annotations/test"),
                 pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=max_depth, crop_type="nyu_crop")
test_evaluator = val_evaluator
