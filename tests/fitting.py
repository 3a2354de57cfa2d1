"""The fast stand-ins of learning runs: a model trained with its config's optimizer on one fixed batch. With the
data fixed the loss falls steadily wherever gradients and optimizer are right, and not by chance, in a few
seconds; the runs of minutes that reach the demos' figures are the slow tier (docs/testing.md)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def fit(model: torch.nn.Module, loss_of: Callable[[int], torch.Tensor], optimizer, steps: int
        ) -> tuple[np.ndarray, list[str]]:
    """``steps`` optimizer steps on ``loss_of(step)``: (the loss before each step, the trainable parameters
    that no step gave a gradient). Zero-initialised output layers, as DETR's box heads, pass gradients on
    from the second step."""
    losses, silent = [], {name for name, p in model.named_parameters() if p.requires_grad}
    for step in range(steps):
        loss = loss_of(step)
        loss.backward()
        silent -= {name for name, p in model.named_parameters() if p.grad is not None and p.grad.any()}
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    return np.array(losses), sorted(silent)


def fit_mmseg_batch(cfg, steps: int) -> tuple[np.ndarray, list[str]]:
    """:func:`fit` for the mmseg config ``cfg``: its model, optimizer and first training batch."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    return fit(model, lambda step: model.parse_losses(model(**model.data_preprocessor(batch, True), mode="loss"))[0],
               build_optim_wrapper(model, cfg.optim_wrapper), steps)


def fit_detector_batch(cfg, steps: int) -> tuple[np.ndarray, list[str]]:
    """:func:`fit` for the detectron2 LazyConfig ``cfg``: its model, optimizer and first training batch."""
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    batch = next(iter(instantiate(cfg.dataloader.train)))

    def loss_of(step):
        with EventStorage(step):  # where detectron2's models log
            return sum(model(batch).values())

    return fit(model, loss_of, instantiate(cfg.optimizer), steps)


def assert_loss_falls(losses: np.ndarray, what: str, below: float = 0.8) -> None:
    """The mean of the last three losses is under ``below`` times that of the first three; the figure is
    printed (pytest -s) for the margins recorded in docs/testing.md."""
    ratio = losses[-3:].mean() / losses[:3].mean()
    print(f"{what}: loss {losses[0]:.3f} -> {losses[-1]:.3f}, last three / first three {ratio:.2f}")
    assert ratio < below, losses


def check_frozen_linear_probe(config, work_dir, options: dict, head_weight: str, what: str) -> None:
    """A frozen-encoder linear probe config: a few iterations of mmengine's Runner leave the encoder
    bit-identical and train the head (its weight and BatchNorm statistics), no encoder parameter is
    trainable, and the head fits a batch."""
    from mmengine.runner import Runner

    from pe_dense.integrations.mmseg.training import load_config

    runner = Runner.from_cfg(load_config(str(config), work_dir=str(work_dir), cfg_options=options))
    model = runner.model
    encoder_before = {k: v.clone() for k, v in model.backbone.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    runner.train()
    assert not model.backbone.encoder.training
    assert all(torch.equal(v, encoder_before[k]) for k, v in model.backbone.encoder.state_dict().items())
    changed = [k for k, v in model.decode_head.state_dict().items() if not torch.equal(v, head_before[k])]
    assert head_weight in changed and "bn.running_mean" in changed

    losses, silent = fit_mmseg_batch(load_config(str(config), cfg_options=options), steps=20)
    assert not silent and not any(p.requires_grad for p in model.backbone.encoder.parameters())
    assert_loss_falls(losses, what)
