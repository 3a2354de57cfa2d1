"""A CPU demo of the whole alignment recipe in about a minute and a half, on the built-in shapes
images and with random weights everywhere (nothing can be downloaded here). A PE-Spatial-T16 student
at 128 px (8 x 8 tokens) learns from two frozen teachers:

- a PE-Core-S16 at block 10, through the learned projection of feature distillation (S is wider
  than T). With random weights a self-teacher would be the student's own block 10, whose tokens
  already equal the student's output (cosine loss ~0.003), so the demo distils from another model
  to show the loss fall; configs/align/PEcore_G_to_spatial.py is the self-alignment recipe;
- SAM 2.1 Hiera-T at 128 px prompted with an 8 x 8 grid (64 mask logits per token).

Measured on 2 CPU cores: ~0.8 s per iteration; the cosine loss falls from ~1.05 to ~0.23 and the
SAM loss from ~0.40 to ~0.14 in 60 iterations. The numbers only show the mechanics."""

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
    student=StudentConfig(model="PE-Spatial-T16-512", weights=None, image_size=128),
    teacher=FeatureTeacherConfig(model="PE-Core-S16-384", weights=None, cosine_weight=1.0),
    sam=SAMTeacherConfig(family="sam2", arch="hiera_t", image_size=128, points_per_side=8, points_per_batch=64,
                         weight=1.0),
    data=DataConfig(augment="random_resized_crop", num_workers=0),
    optim=OptimConfig(lr=5e-4, warmup_iters=5),
    train=TrainConfig(output_dir="outputs/align_tiny", iters=100, batch_size=8, amp=False, checkpoint_period=25,
                      log_period=5),
)
