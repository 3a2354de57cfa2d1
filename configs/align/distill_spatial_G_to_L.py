"""Distilling PE-Spatial-G into a smaller student, as the released T/S/B/L spatial models were made
(pe_reference.md §4): the frozen Spatial-G's last-layer tokens teach through direct feature
distillation (per-token cosine through a learned projection, G being wider) and pairwise token
cosine similarity, weighted equally. Student and teacher see the same 32 x 32 token grid
(L14 at 448 px; T/S/B16 at 512 px, see the distill_spatial_G_to_{T,S,B}.py configs).

The student starts from PE-Core-L's weights; the export keeps its architecture (with the unused
CLIP head), so load it with build_encoder("PE-Core-L14-336", weights=...).
"""

from pe_dense.align.config import (AlignConfig, DataConfig, FeatureTeacherConfig, OptimConfig, SAMTeacherConfig,
                                   StudentConfig, TrainConfig)

config = AlignConfig(
    student=StudentConfig(model="PE-Core-L14-336", weights="hub", image_size=448, drop_path_rate=0.1,
                          grad_checkpointing=True),
    teacher=FeatureTeacherConfig(model="PE-Spatial-G14-448", weights="hub", layer=-1, image_size=448,
                                 cosine_weight=1.0, pairwise_weight=1.0),
    sam=SAMTeacherConfig(family=None),
    data=DataConfig(root="datasets/sa1b", augment="random_resized_crop", min_scale=0.4, hflip=True, num_workers=8),
    optim=OptimConfig(lr=5e-5, weight_decay=0.05, warmup_iters=500, clip_grad=1.0),
    train=TrainConfig(output_dir="output/distill_spatial_G_to_L", iters=20000, batch_size=16, amp=True,
                      checkpoint_period=1000),
)
