"""The spatial-alignment trainer (docs/alignment.md): a PE student learns from a frozen feature
teacher (per-token cosine and/or pairwise similarity) and from SAM's mask-logit correspondences
(pairwise similarity), with AdamW, warmup + cosine, bf16 autocast, gradient checkpointing, torch
DDP (torchrun), periodic checkpoints that resume exactly (:mod:`.checkpointer`), metrics.jsonl +
TensorBoard, and at the end the student in the official PE ``.pt`` format."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..atomic_files import atomic_output, write_json
from ..integrations.sam import build_segmenter
from ..models.build import build_encoder
from ..models.checkpoint import save_state_dict
from ..models.hub import resolve_weights
from ..models.inference import autocast
from ..models.vision_transformer import PEVisionTransformer
from .allocator import reuse_freed_memory
from .checkpointer import AlignCheckpointer, find_checkpoints
from .config import AlignConfig
from .data import EpochStreamSampler, ImageFolder, builtin_image_folder, collate
from .losses import FeatureDistillation, pairwise_similarity_loss
from .target_cache import TargetCache
from .teachers import FeatureTeacher, SAMCorrespondenceTeacher, pe_input

logger = logging.getLogger("pe_dense.align")
EXPORT_NAME = "student_final"


class AlignmentModel(nn.Module):
    """What is trained: the student, and the projection that feature distillation learns when the
    teacher is wider. Its forward returns the weighted losses, so DDP sees every parameter in use."""

    def __init__(self, student: PEVisionTransformer, image_size: int, config: AlignConfig,
                 teacher_width: Optional[int]):
        super().__init__()
        self.student, self.image_size, self.config = student, image_size, config
        self.distill = FeatureDistillation(student.width, teacher_width) if teacher_width else None

    def forward(self, images, teacher_tokens=None, sam_targets=None) -> dict[str, torch.Tensor]:
        tokens = self.student.forward_features(pe_input(images, self.image_size))
        tokens = tokens[:, int(self.student.use_cls_token):]
        with torch.autocast(images.device.type, enabled=False):  # the losses in float32
            tokens = tokens.float()
            weights = {"cosine": self.config.teacher.cosine_weight, "pairwise": self.config.teacher.pairwise_weight,
                       "sam": self.config.sam.weight}
            losses = {}
            if teacher_tokens is not None and weights["cosine"] > 0:
                losses["cosine"] = self.distill(tokens, teacher_tokens.float())
            if teacher_tokens is not None and weights["pairwise"] > 0:
                losses["pairwise"] = pairwise_similarity_loss(tokens, teacher_tokens.float())
            if sam_targets is not None:
                losses["sam"] = pairwise_similarity_loss(tokens, sam_targets.float())
            losses["total"] = sum(weights[name] * value for name, value in losses.items())
        return losses


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR factor: linear warmup to 1 over ``warmup`` iterations, then cosine down to ``min_ratio``."""
    def factor(iteration: int) -> float:
        if iteration < warmup:
            return (iteration + 1) / warmup
        progress = (iteration - warmup) / max(total - warmup, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, layer-scale gammas and the embeddings (as in PE and ViT training)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        flat = p.ndim < 2 or name.endswith(("positional_embedding", "class_embedding"))
        (no_decay if flat else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank), starting the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


class AlignTrainer:
    """Builds everything from an :class:`AlignConfig`; :meth:`train` runs to ``train.iters``.

    With ``resume`` it continues from the newest checkpoint in ``train.output_dir`` (or starts when
    there is none); without it, an output folder that already holds checkpoints is refused rather
    than overwritten.
    """

    def __init__(self, config: AlignConfig, resume: bool = False):
        self.config = config.validate()
        self.rank, self.world, local_rank = _distributed()
        self.device = self._device(config.train.device, local_rank)
        self.output_dir = Path(config.train.output_dir)
        existing = find_checkpoints(self.output_dir)
        if existing and not resume:
            raise FileExistsError(f"{self.output_dir} already holds checkpoints ({existing[-1].name}): pass --resume "
                                  f"to continue that run, or choose another train.output_dir")

        torch.manual_seed(config.train.seed)  # the same random initialisations on every process
        self.student_size = config.student_size()
        student = build_encoder(config.student.model, weights=config.student.weights,
                                drop_path_rate=config.student.drop_path_rate)
        self.teacher = self._feature_teacher(student) if config.uses_teacher else None
        student.set_grad_checkpointing(config.student.grad_checkpointing)
        self.grid = (self.student_size // student.patch_size,) * 2
        needs_projection = self.teacher is not None and config.teacher.cosine_weight > 0
        self.model = AlignmentModel(student.train(), self.student_size, config,
                                    self.teacher.width if needs_projection else None).to(self.device)
        self.cache: Optional[TargetCache] = None
        self.sam = self._sam_teacher() if config.uses_sam else None
        self.ddp_model = (DistributedDataParallel(self.model, device_ids=[local_rank] if self.device.type == "cuda"
                                                  else None) if self.world > 1 else self.model)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, optim.weight_decay), lr=optim.lr,
                                           betas=tuple(optim.betas))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(optim.warmup_iters, config.train.iters, optim.min_lr_ratio))
        self.dataset = self._dataset()
        self.iteration, self.batches_drawn, self.skipped_images = 0, 0, 0
        torch.manual_seed(config.train.seed + self.rank)  # per-process randomness (drop path)
        self.checkpointer = AlignCheckpointer(self.output_dir, self.model, self.optimizer, self.scheduler,
                                              rank=self.rank, world=self.world, device=self.device,
                                              keep=config.train.keep_checkpoints)
        if existing:
            self._resume(existing[-1])

    # ------------------------------------------------------------------ building
    @staticmethod
    def _device(spec: str, local_rank: int) -> torch.device:
        if spec == "auto":
            return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        return torch.device(spec)

    def _feature_teacher(self, student: PEVisionTransformer) -> FeatureTeacher:
        cfg = self.config.teacher
        if cfg.model is None:  # self-alignment: a frozen copy of the student as initialised
            encoder = copy.deepcopy(student)
        else:
            encoder = build_encoder(cfg.model, weights=cfg.weights)
        size = cfg.image_size or self.student_size // student.patch_size * encoder.patch_size
        return FeatureTeacher(encoder, cfg.layer, size).to(self.device)

    def _sam_teacher(self) -> SAMCorrespondenceTeacher:
        cfg = self.config.sam
        checkpoint = resolve_weights("SAM", cfg.checkpoint) if cfg.checkpoint is not None else None
        segmenter = build_segmenter(cfg.family, cfg.arch, checkpoint, cfg.image_size, self.device)
        if self.device.type == "cpu":  # its decoder's temporaries are reused instead of faulted in anew
            reuse_freed_memory()
        teacher = SAMCorrespondenceTeacher(segmenter, cfg.points_per_side, cfg.points_per_batch, cfg.mask)
        if cfg.cache_dir is not None:
            weights = Path(checkpoint) if checkpoint else None
            fingerprint = {**teacher.fingerprint(), "arch": cfg.arch, "token_grid": self.grid,
                           "weights": [str(weights.resolve()), weights.stat().st_size] if weights else "random",
                           "picture": [self.data_size(), self.config.data.augment]}
            self.cache = TargetCache(cfg.cache_dir, fingerprint, getattr(torch, cfg.cache_dtype))
        return teacher

    def data_size(self) -> int:
        """Side of the loaded crops: the largest input any model takes (each resizes down to its own)."""
        sizes = [self.student_size]
        if self.config.uses_teacher:
            sizes.append(self.teacher.image_size)
        if self.config.uses_sam:
            sizes.append(self.config.sam.image_size)
        return max(sizes)

    def _dataset(self) -> ImageFolder:
        cfg = self.config.data
        root = cfg.root
        if root is None:
            if self.rank == 0:
                root = builtin_image_folder()
            if self.world > 1:
                dist.barrier()  # the first process writes the built-in images, the others wait
            root = builtin_image_folder()
        return ImageFolder(root, self.data_size(), cfg.augment, cfg.min_scale, cfg.hflip, self.config.train.seed)

    def _loader(self) -> DataLoader:
        batch = self.config.train.batch_size
        sampler = EpochStreamSampler(len(self.dataset), self.config.train.seed, self.rank, self.world,
                                     start=self.batches_drawn * batch)
        workers = self.config.data.num_workers
        # Its own generator, so creating a loader (again, on resume) leaves the global RNG alone.
        return DataLoader(self.dataset, batch_size=batch, sampler=sampler, collate_fn=collate, num_workers=workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(self.config.train.seed))

    # ------------------------------------------------------------------ one step
    def _next_batch(self, batches) -> torch.Tensor:
        while True:
            batch = next(batches)
            self.batches_drawn += 1
            for reason in batch["skipped"]:
                self.skipped_images += 1
                logger.warning("skipping unreadable image %s (%d skipped so far)", reason, self.skipped_images)
            if batch["images"] is not None:
                return batch["images"].to(self.device, non_blocking=True), batch["keys"]

    def _sam_targets(self, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        if self.cache is None:
            return self.sam(images, self.grid)
        targets = [self.cache.get(key) for key in keys]
        missing = [i for i, t in enumerate(targets) if t is None]
        if missing:
            fresh = self.sam(images[missing], self.grid)
            for i, value in zip(missing, fresh):
                targets[i] = self.cache.put(keys[i], value)
        return torch.stack(targets).to(self.device)

    def step(self, images: torch.Tensor, keys: list[str]) -> dict[str, float]:
        precision = "bf16" if self.config.train.amp else "fp32"
        with torch.no_grad(), autocast(self.device, precision):
            teacher_tokens = self.teacher(images) if self.teacher is not None else None
            sam_targets = self._sam_targets(images, keys) if self.sam is not None else None
        with autocast(self.device, precision):
            losses = self.ddp_model(images, teacher_tokens, sam_targets)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if self.config.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        return {name: value.item() for name, value in losses.items()}

    # ------------------------------------------------------------------ the loop
    def train(self) -> Optional[Path]:
        """Train to ``train.iters``; returns the exported student (on the first process)."""
        cfg = self.config.train
        is_main = self.rank == 0
        writer = self._tensorboard() if is_main else None
        batches = iter(self._loader())
        progress = tqdm(total=cfg.iters, initial=self.iteration, disable=not is_main, desc="align", unit="it")
        started = time.perf_counter()
        while self.iteration < cfg.iters:
            images, keys = self._next_batch(batches)
            losses = self.step(images, keys)
            self.iteration += 1
            progress.update()
            progress.set_postfix(loss=f"{losses['total']:.4f}")
            last = self.iteration == cfg.iters
            if is_main and (self.iteration % cfg.log_period == 0 or last):
                self._log(losses, writer, time.perf_counter() - started)
            if self.iteration % cfg.checkpoint_period == 0 or last:
                self.checkpointer.save(self.iteration, batches_drawn=self.batches_drawn,
                                       skipped_images=self.skipped_images,
                                       config=json.dumps(dataclasses.asdict(self.config)))
        progress.close()
        if writer is not None:
            writer.close()
        return self.export() if is_main else None

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed: metrics go to metrics.jsonl only")
            return None
        return SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.iteration + 1)

    def _log(self, losses: dict[str, float], writer, elapsed: float) -> None:
        record = {"iteration": self.iteration, **{f"loss_{k}": v for k, v in losses.items()},
                  "lr": self.scheduler.get_last_lr()[0], "skipped_images": self.skipped_images,
                  "seconds": round(elapsed, 3)}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            for key, value in record.items():
                if key != "iteration":
                    writer.add_scalar(key.replace("loss_", "loss/"), value, self.iteration)

    # ------------------------------------------------------------------ resuming
    def _resume(self, path: Path) -> None:
        state = self.checkpointer.load(path)
        self.iteration, self.batches_drawn = state["iteration"], state["batches_drawn"]
        self.skipped_images = state["skipped_images"]
        if self.rank == 0:
            self._forget_metrics_after(self.iteration)
        logger.info("resumed from %s at iteration %d", path, self.iteration)

    def _forget_metrics_after(self, iteration: int) -> None:
        """Drop records logged after the checkpoint (the run is about to log those iterations again)."""
        path = self.output_dir / "metrics.jsonl"
        if not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        with atomic_output(path) as tmp:
            tmp.write_text("".join(line for line in lines if json.loads(line)["iteration"] <= iteration))

    def export(self) -> Path:
        """The student as an official PE ``.pt`` state dict (loadable by ``build_encoder`` and the
        official code), with a JSON note of what it is."""
        path = self.output_dir / f"{EXPORT_NAME}.pt"
        save_state_dict({k: v.detach().cpu() for k, v in self.model.student.state_dict().items()}, path)
        note = {"model": self.config.student.model, "image_size": self.student_size, "iterations": self.iteration,
                "skipped_images": self.skipped_images, "config": dataclasses.asdict(self.config)}
        write_json(path.with_suffix(".json"), note)
        logger.info("student saved to %s (load it with build_encoder(%r, weights=%r))", path,
                    self.config.student.model, str(path))
        return path
