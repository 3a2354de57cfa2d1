"""Checkpoints of an alignment run that resume it exactly, in the manner of detectron2's ``Checkpointer``: the
model, optimizer and scheduler, the loop's counters and every process's random state, in
``<output_dir>/checkpoints/iter_XXXXXXXX.pt``, written atomically by the first process; the newest few are
kept. They are read without unpickling code (torch's weights-only loading)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from ..atomic_files import atomic_output
from ..models.checkpoint import CheckpointError, load_torch_file

CHECKPOINT_DIR = "checkpoints"


def find_checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoints of the run in ``output_dir``, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    return sorted(folder.glob("iter_*.pt")) if folder.is_dir() else []


class AlignCheckpointer:
    """Saves and restores ``model``, ``optimizer`` and ``scheduler`` with the loop's counters (``extra``), for
    a run of ``world`` processes of which this one is ``rank``; ``keep`` checkpoints are kept."""

    def __init__(self, output_dir: Path, model, optimizer, scheduler, *, rank: int, world: int,
                 device: torch.device, keep: int):
        self.output_dir, self.model, self.optimizer, self.scheduler = Path(output_dir), model, optimizer, scheduler
        self.rank, self.world, self.device, self.keep = rank, world, device, keep

    def _gather_rng(self) -> dict:
        """Every process's random state, per kind (cpu, cuda), in rank order."""
        states = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world == 1:
            return {key: [value] for key, value in states.items()}
        gathered = [None] * self.world
        dist.all_gather_object(gathered, states)
        return {key: [g[key] for g in gathered] for key in states}

    def save(self, iteration: int, **extra) -> None:
        """Write the checkpoint of ``iteration`` with ``extra`` (every process calls it: the random states are
        gathered from all)."""
        rng = self._gather_rng()
        if self.rank != 0:
            return
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "iteration": iteration, **extra, "rng": rng,
                 "world_size": self.world}
        folder = self.output_dir / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(folder / f"iter_{iteration:08d}.pt") as tmp:
            torch.save(state, tmp)
        for old in find_checkpoints(self.output_dir)[: -self.keep]:
            old.unlink()

    def load(self, path: Path) -> dict:
        """Restore the checkpoint at ``path``; the rest of what it holds (the iteration and ``extra``)."""
        state = load_torch_file(path)
        if state.get("world_size") != self.world:
            raise CheckpointError(f"{path} was written by {state.get('world_size')} processes, this run has "
                                  f"{self.world}: resume with the same number (the data order depends on it)")
        self.model.load_state_dict(state.pop("model"))
        self.optimizer.load_state_dict(state.pop("optimizer"))
        self.scheduler.load_state_dict(state.pop("scheduler"))
        rng = state.pop("rng")
        torch.set_rng_state(rng["cpu"][self.rank])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"][self.rank], self.device)
        return state
