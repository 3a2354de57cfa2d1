# pe_dense's built-in depth scenes (pe_dense.data.depth_scenes): ray-cast rooms, 120x160 images with exact depth,
# in the NYU-Depth-v2 layout, generated under $PE_DENSE_DATASETS/pe_depth_scenes (default datasets/pe_depth_scenes)
# on first use. Evaluated as NYU is (depth in (0.001 m, 10 m), every DepthMetric figure) without the Eigen crop,
# which is NYU's 480x640 border.
dataset_type = "PEDepthScenesDataset"
max_depth = 10.0
meta_keys = ("img_path", "depth_map_path", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
             "flip_direction")
train_pipeline = [
    dict(type="LoadCheckedImage"),
    dict(type="LoadCheckedDepth", depth_rescale_factor=1e-3, max_depth=max_depth),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs", meta_keys=meta_keys),
]
test_pipeline = [
    dict(type="LoadCheckedImage"),
    dict(type="LoadCheckedDepth", depth_rescale_factor=1e-3, max_depth=max_depth),
    dict(type="PackSegInputs", meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type=dataset_type, split="train", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type=dataset_type, split="test", pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=max_depth)
test_evaluator = val_evaluator
