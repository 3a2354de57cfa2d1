"""Spatial-alignment losses on token features (B, N, C): per-token cosine distillation, pairwise
cosine-similarity matching (chunked, so memory stays O(N·C) at any token count), and feature
distillation through a learned projection when student and teacher widths differ."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _check_tokens(student: torch.Tensor, teacher: torch.Tensor, same_width: bool) -> None:
    if student.ndim != 3 or teacher.ndim != 3:
        raise ValueError(f"expected token features (B, N, C), got student {tuple(student.shape)} and teacher "
                         f"{tuple(teacher.shape)}")
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(f"student and teacher must have the same batch and token count, got "
                         f"{tuple(student.shape[:2])} and {tuple(teacher.shape[:2])} (resize one to the other's grid)")
    if same_width and student.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"student width {student.shape[-1]} differs from teacher width {teacher.shape[-1]}: "
                         f"use FeatureDistillation, which learns a projection")


def cosine_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of 1 - cos(student token, teacher token); the teacher gets no gradient."""
    _check_tokens(student, teacher, same_width=True)
    return (1 - F.cosine_similarity(student, teacher.detach(), dim=-1)).mean()


def _chunk_squared_error(student_rows, student, teacher_rows, teacher):
    return ((student_rows @ student.transpose(1, 2) - teacher_rows @ teacher.transpose(1, 2)) ** 2).sum()


def pairwise_similarity_loss(student: torch.Tensor, teacher: torch.Tensor, chunk_size: int = 512) -> torch.Tensor:
    """Mean squared difference between the student's and the teacher's token-token cosine-similarity
    matrices (B, N, N), which need not have the same width (e.g. SAM's P² mask-logit vectors).

    The matrices are never built whole: rows are taken ``chunk_size`` at a time, and each chunk is
    recomputed in the backward pass instead of being kept, so memory is O(N·(C + chunk_size)).
    """
    _check_tokens(student, teacher, same_width=False)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    s, t = F.normalize(student, dim=-1), F.normalize(teacher.detach(), dim=-1).to(student.dtype)
    tokens = s.shape[1]
    total = s.new_zeros(())
    for start in range(0, tokens, chunk_size):
        rows = slice(start, start + chunk_size)
        total = total + checkpoint(_chunk_squared_error, s[:, rows], s, t[:, rows], t, use_reentrant=False)
    return total / (s.shape[0] * tokens * tokens)


class FeatureDistillation(nn.Module):
    """Cosine distillation of teacher tokens through a learned linear projection of the student's
    (identity when the widths agree), as when distilling PE-G features into T/S/B/L students."""

    def __init__(self, student_width: int, teacher_width: int):
        super().__init__()
        self.projection = (nn.Identity() if student_width == teacher_width
                           else nn.Linear(student_width, teacher_width))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return cosine_distillation_loss(self.projection(student), teacher)
