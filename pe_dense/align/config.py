"""Configuration of an alignment run: plain dataclasses, written as Python files under
configs/align/ (each defines ``config``) and changed from the command line with ``key.sub=value``."""

from __future__ import annotations

import ast
import dataclasses
import os
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from .. import configs
from ..integrations.sam import MASK_CHOICES, SAM_FAMILIES
from ..models.configs import get_config

AUGMENTATIONS = ("resize", "center_crop", "random_resized_crop")


class AlignConfigError(ValueError):
    """A configuration that cannot run, with what to change."""


@dataclass
class StudentConfig:
    model: str = "PE-Core-G14-448"
    weights: Optional[str] = "hub"  # a checkpoint path, "hub", "hf://repo:file", or None for random weights
    image_size: Optional[int] = None  # None: the model's pretraining size
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False


@dataclass
class FeatureTeacherConfig:
    """A frozen PE whose tokens teach: the student's own initial weights at an intermediate layer
    (self-alignment), or a bigger aligned model (distillation into a small student)."""

    model: Optional[str] = None  # None: the student's model and weights (self-alignment)
    weights: Optional[str] = None  # with model set: as StudentConfig.weights
    layer: Optional[int] = None  # None: pe_dense.align.teachers.default_teacher_layer (41 for G)
    image_size: Optional[int] = None  # None: the student's input size
    cosine_weight: float = 1.0  # per-token cosine (through a learned projection when widths differ)
    pairwise_weight: float = 0.0  # token-token cosine-similarity matrices


@dataclass
class SAMTeacherConfig:
    family: Optional[str] = "sam2"  # "sam2" (SAM 2.1), "segment_anything" (SAM), or None: no SAM teacher
    arch: str = "hiera_l"
    checkpoint: Optional[str] = None  # the released weights (path or hf://repo:file); None: random weights
    image_size: int = 1024
    points_per_side: int = 32
    points_per_batch: int = 64
    mask: str = "single"  # "single" or "best" (see SAMCorrespondenceTeacher)
    weight: float = 1.0
    cache_dir: Optional[str] = None  # keep targets here (safetensors) so later epochs skip SAM
    cache_dtype: str = "float16"


@dataclass
class DataConfig:
    root: Optional[str] = None  # any folder of images, searched recursively (SA-1B too); None: built-in shapes
    augment: str = "random_resized_crop"  # "resize", "center_crop" or "random_resized_crop"
    min_scale: float = 0.4  # smallest crop area (fraction of the image) for random_resized_crop
    hflip: bool = True
    num_workers: int = 4


@dataclass
class OptimConfig:
    lr: float = 1e-5
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.95)
    warmup_iters: int = 500
    min_lr_ratio: float = 0.0  # the cosine schedule ends at lr * min_lr_ratio
    clip_grad: Optional[float] = 1.0


@dataclass
class TrainConfig:
    output_dir: str = "outputs/align"
    iters: int = 20000
    batch_size: int = 8  # per process
    seed: int = 0
    amp: bool = True  # bf16 autocast
    device: str = "auto"  # "auto": this process's GPU if there is one, else the CPU
    checkpoint_period: int = 1000
    keep_checkpoints: int = 2
    log_period: int = 20


@dataclass
class AlignConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: FeatureTeacherConfig = field(default_factory=FeatureTeacherConfig)
    sam: SAMTeacherConfig = field(default_factory=SAMTeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def uses_teacher(self) -> bool:
        return self.teacher.cosine_weight > 0 or self.teacher.pairwise_weight > 0

    @property
    def uses_sam(self) -> bool:
        return self.sam.family is not None and self.sam.weight > 0

    def student_size(self) -> int:
        return self.student.image_size or get_config(self.student.model).image_size

    def teacher_model(self) -> tuple[str, Optional[str]]:
        """(model, weights) of the feature teacher."""
        if self.teacher.model is None:
            return self.student.model, self.student.weights
        return self.teacher.model, self.teacher.weights

    def validate(self) -> "AlignConfig":
        """Raise :class:`AlignConfigError` naming the setting to change; return self when it can run."""
        student = get_config(self.student.model)
        size = self.student_size()
        if size % student.patch_size:
            raise AlignConfigError(f"student.image_size {size} is not a multiple of {student.name}'s patch "
                                   f"{student.patch_size}")
        grid = size // student.patch_size
        if not (self.uses_teacher or self.uses_sam):
            raise AlignConfigError("nothing to learn from: set teacher.cosine_weight, teacher.pairwise_weight or "
                                   "sam.weight above 0")
        if self.uses_teacher:
            name, _ = self.teacher_model()
            teacher = get_config(name)
            teacher_size = self.teacher.image_size or grid * teacher.patch_size
            if teacher_size % teacher.patch_size or teacher_size // teacher.patch_size != grid:
                raise AlignConfigError(
                    f"resolution mismatch: teacher {name} at {teacher_size} px gives a "
                    f"{teacher_size // teacher.patch_size}x{teacher_size // teacher.patch_size} token grid (patch "
                    f"{teacher.patch_size}) but student {student.name} at {size} px gives {grid}x{grid}: set "
                    f"teacher.image_size = {grid * teacher.patch_size} (or leave it unset)")
            if self.teacher.layer is not None and not -teacher.depth <= self.teacher.layer < teacher.depth:
                raise AlignConfigError(f"teacher.layer {self.teacher.layer} is outside {name}'s blocks "
                                       f"({-teacher.depth}..{teacher.depth - 1})")
        if self.uses_sam:
            sam = self.sam
            if sam.family not in SAM_FAMILIES:
                raise AlignConfigError(f"sam.family must be one of {', '.join(SAM_FAMILIES)} or None, got "
                                       f"'{sam.family}'")
            if sam.arch not in SAM_FAMILIES[sam.family]:
                raise AlignConfigError(f"sam.arch '{sam.arch}' is not a {sam.family} model (known: "
                                       f"{', '.join(SAM_FAMILIES[sam.family])})")
            if sam.mask not in MASK_CHOICES:
                raise AlignConfigError(f"sam.mask must be one of {MASK_CHOICES}, got '{sam.mask}'")
            if sam.points_per_side < 1 or sam.points_per_batch < 1:
                raise AlignConfigError("sam.points_per_side and sam.points_per_batch must be positive")
            if sam.image_size // 4 < grid:
                raise AlignConfigError(
                    f"resolution mismatch: SAM at {sam.image_size} px gives {sam.image_size // 4}x"
                    f"{sam.image_size // 4} mask logits, coarser than the student's {grid}x{grid} tokens: raise "
                    f"sam.image_size to at least {4 * grid}")
            if sam.cache_dir is not None and (self.data.augment == "random_resized_crop" or self.data.hflip):
                raise AlignConfigError("sam.cache_dir needs the same picture of an image every epoch: set data.augment "
                                       "to 'resize' or 'center_crop' and data.hflip = False, or sam.cache_dir = None")
            if sam.cache_dtype not in ("float16", "float32"):
                raise AlignConfigError(f"sam.cache_dtype must be float16 or float32, got '{sam.cache_dtype}'")
        if self.data.root is not None and not Path(self.data.root).is_dir():
            raise AlignConfigError(f"data.root {self.data.root} is not a folder: set data.root to your images "
                                   f"(or None for the built-in demo images)")
        if self.data.augment not in AUGMENTATIONS:
            raise AlignConfigError(f"data.augment must be one of {AUGMENTATIONS}, got '{self.data.augment}'")
        if not 0 < self.data.min_scale <= 1:
            raise AlignConfigError(f"data.min_scale must be in (0, 1], got {self.data.min_scale}")
        train = self.train
        for key in ("iters", "batch_size", "checkpoint_period", "keep_checkpoints", "log_period"):
            if getattr(train, key) < 1:
                raise AlignConfigError(f"train.{key} must be positive, got {getattr(train, key)}")
        if self.optim.warmup_iters < 0 or self.optim.lr <= 0:
            raise AlignConfigError("optim.lr must be positive and optim.warmup_iters not negative")
        return self


def load_config(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> AlignConfig:
    """The ``config`` defined by a Python config file, with ``key.sub=value`` overrides applied
    (values are Python literals; anything else is taken as a string), validated."""
    try:
        path = configs.resolve(path)
    except FileNotFoundError as e:
        raise AlignConfigError(str(e)) from None
    config = runpy.run_path(str(path)).get("config")
    if not isinstance(config, AlignConfig):
        raise AlignConfigError(f"{path} must define `config = AlignConfig(...)`")
    return apply_overrides(config, overrides).validate()


def apply_overrides(config: AlignConfig, overrides: Sequence[str]) -> AlignConfig:
    config = dataclasses.replace(config, **{f.name: dataclasses.replace(getattr(config, f.name))
                                            for f in dataclasses.fields(config)})
    for item in overrides:
        key, sep, text = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or not name:
            raise AlignConfigError(f"override '{item}' is not of the form section.key=value")
        if section not in {f.name for f in dataclasses.fields(config)}:
            raise AlignConfigError(f"unknown config section '{section}' in '{item}' (known: "
                                   f"{', '.join(f.name for f in dataclasses.fields(config))})")
        part = getattr(config, section)
        known = [f.name for f in dataclasses.fields(part)]
        if name not in known:
            raise AlignConfigError(f"unknown setting '{key}' (known in {section}: {', '.join(known)})")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        setattr(part, name, value)
    return config
