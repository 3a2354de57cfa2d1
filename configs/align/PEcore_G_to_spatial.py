"""The PE-Spatial recipe (docs/alignment.md): PE-Core-G at 448 px learns from a frozen copy of
itself at block 41 (per-token cosine) and from SAM 2.1-L's mask-logit correspondences over a
32 x 32 point grid (pairwise cosine-similarity MSE), both losses weighted 1.

The paper gives no optimiser settings for this stage; lr, schedule, batch and length here are ours
(a short, low-lr fine-tune). Point data.root at your images (e.g. an SA-1B extract):

    torchrun --nproc_per_node 8 tools/align_net.py --config configs/align/PEcore_G_to_spatial.py \
        data.root=/data/sa1b sam.checkpoint=/weights/sam2.1_hiera_large.pt
"""

from pe_dense.align.config import (
    AlignConfig,
    DataConfig,
    FeatureTeacherConfig,
    OptimConfig,
    SAMTeacherConfig,
    StudentConfig,
    TrainConfig,
)

config = AlignConfig(
    student=StudentConfig(model="PE-Core-G14-448", weights="hub", image_size=448, drop_path_rate=0.1,
                          grad_checkpointing=True),
    teacher=FeatureTeacherConfig(layer=41, cosine_weight=1.0),
    sam=SAMTeacherConfig(family="sam2", arch="hiera_l", checkpoint="hf://facebook/sam2.1-hiera-large:sam2.1_hiera_large.pt",
                         image_size=1024, points_per_side=32, points_per_batch=256, weight=1.0),
    data=DataConfig(root="datasets/sa1b", augment="random_resized_crop", min_scale=0.4, hflip=True, num_workers=8),
    optim=OptimConfig(lr=1e-5, weight_decay=0.05, warmup_iters=500, clip_grad=1.0),
    train=TrainConfig(output_dir="outputs/align_PEcore_G", iters=20000, batch_size=4, amp=True,
                      checkpoint_period=1000),
)
