# mmengine runtime shared by every mmsegmentation config (configs/segmentation, configs/depth): pe_dense's mmseg
# integration imported by name, logging, periodic checkpoints. The evaluator is the dataset's and the training
# schedule (train_cfg) the model's.
custom_imports = dict(imports=["pe_dense.integrations.mmseg"], allow_failed_imports=False)
default_scope = "mmseg"
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))  # tools/train_seg.py switches to gloo without CUDA
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)  # reproducible runs (data order, augmentation, head initialisation)

val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=4000, max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
