"""Alignment recipes shared by several configs under configs/align/."""

from __future__ import annotations

from ..models.configs import get_config
from .config import (
    AlignConfig,
    DataConfig,
    FeatureTeacherConfig,
    OptimConfig,
    SAMTeacherConfig,
    StudentConfig,
    TrainConfig,
)

SPATIAL_G = "PE-Spatial-G14-448"


def distill_spatial_G(student: str, *, output_dir: str) -> AlignConfig:
    """Distilling PE-Spatial-G into a smaller ``student``, as the released T/S/B/L spatial models were
    made (docs/alignment.md).

    The frozen Spatial-G's last-layer tokens teach through direct feature distillation (per-token
    cosine through a learned projection, G being wider) and pairwise token cosine similarity, weighted
    equally. Student and teacher see the same token grid: G's 32 x 32 at 448 px, so the student runs at
    32 x its patch (448 px for L14, 512 px for T/S/B16). The student starts from its released weights;
    the export keeps its architecture (with the unused CLIP head of a Core student), so load it with
    ``build_encoder(student, weights=...)``.
    """
    teacher = get_config(SPATIAL_G)
    return AlignConfig(
        student=StudentConfig(model=student, weights="hub",
                              image_size=teacher.pretrain_grid * get_config(student).patch_size,
                              drop_path_rate=0.1, grad_checkpointing=True),
        teacher=FeatureTeacherConfig(model=SPATIAL_G, weights="hub", layer=-1, image_size=teacher.image_size,
                                     cosine_weight=1.0, pairwise_weight=1.0),
        sam=SAMTeacherConfig(family=None),
        data=DataConfig(root="datasets/sa1b", augment="random_resized_crop", min_scale=0.4, hflip=True, num_workers=8),
        optim=OptimConfig(lr=5e-5, weight_decay=0.05, warmup_iters=500, clip_grad=1.0),
        train=TrainConfig(output_dir=output_dir, iters=20000, batch_size=16, amp=True, checkpoint_period=1000),
    )
