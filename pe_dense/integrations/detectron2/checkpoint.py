"""detectron2's checkpointer for detectors with a PE backbone.

One class reads all three kinds of file a PE detector meets: its own training checkpoints (resume),
the released PE detectron2 checkpoints (backbone under ``backbone.net.``) and plain PE encoder
checkpoints (``.pt`` with any prefix, official or timm layout, patch 14) used to initialise the
backbone. Files are read without unpickling code, and the backbone part is fitted to the model
(patch-14 kernels resized to 16, the (1, N, C) position table of detectron2 conversions squeezed,
the class embedding dropped) before detectron2 loads it.

Checkpoint paths may also name released files: ``pe://<MODEL>`` (the released encoder, e.g.
``pe://PE-Spatial-G14-448``, from $PE_DENSE_WEIGHTS or the hub) and ``hf://<repo>:<file>`` (e.g.
``hf://facebook/PE-Detection:mask_rcnn_PEspatial_G_coco36ep.pth``).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

from ...atomic_files import atomic_output
from ...models import PEVisionTransformer, resolve_weights
from ...models.checkpoint import (
    CheckpointError,
    StateDict,
    adapt_to_model,
    compare,
    find_vision_tower,
    load_torch_file,
    read_checkpoint,
    to_official,
    unwrap_state_dict,
    vision_towers,
)

logger = logging.getLogger(__name__)


def find_pe_encoder(model) -> Optional[tuple[str, PEVisionTransformer]]:
    """(state-dict prefix, module) of the PE encoder inside a detector, or None if it has none."""
    found = [(name + "." if name else "", m) for name, m in model.named_modules() if isinstance(m, PEVisionTransformer)]
    if len(found) > 1:
        raise CheckpointError(f"the model holds several PE encoders ({[p for p, _ in found]}); load them one by one")
    return found[0] if found else None


def fit_pe_weights(state: StateDict, prefix: str, encoder: PEVisionTransformer) -> tuple[StateDict, list[str]]:
    """A detector state dict whose PE encoder keys, wherever and in whatever layout the checkpoint had
    them, sit under ``prefix`` and fit ``encoder``. Returns it with notes on what was changed.

    A checkpoint whose encoder is already under ``prefix`` (a detector checkpoint) keeps its other
    keys; any other checkpoint is an encoder checkpoint, whose remaining keys (text tower, heads) are
    dropped. Shape mismatches of the encoder raise :class:`CheckpointError`.
    """
    _, found = find_vision_tower(state)
    tower, outside = to_official(state, found)
    tower, notes = adapt_to_model(tower, encoder)
    report = compare(tower, encoder)
    if report.mismatched:
        raise CheckpointError(f"the checkpoint's PE encoder does not fit {encoder.config.name}:\n{report}")
    if found == prefix:
        fitted = {k: state[k] for k in outside}
    else:
        fitted = {}
        notes.append(f"PE encoder read from '{found or '<top level>'}' into '{prefix}'"
                     + (f", {len(outside)} keys outside it left out" if outside else ""))
    fitted.update({prefix + k: v for k, v in tower.items()})
    return fitted, notes


class PEDetectionCheckpointer(DetectionCheckpointer):
    """:class:`detectron2.checkpoint.DetectionCheckpointer` that reads files safely and fits PE weights.

    Use it wherever detectron2's is used (``resume_or_load``, ``PeriodicCheckpointer``, ``load``).
    Pickle files (``.pkl``, ``.pyth``) are refused, since unpickling can run code; torch files are
    read with ``weights_only=True`` and ``.safetensors`` files are accepted. Saving is atomic.
    """

    def save(self, name: str, **kwargs) -> None:
        """As detectron2's, but the file is complete or absent. Loads memory-map checkpoints, so
        overwriting one in place (``model_final.pth`` after ``--resume``) would pull the pages from
        under the tensors still read from it."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: v.state_dict() for k, v in self.checkpointables.items()},
                **kwargs}
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        with atomic_output(path) as tmp:
            torch.save(data, tmp)
        self.tag_last_checkpoint(os.path.basename(path))

    def _load_file(self, filename: str) -> dict:
        if filename.endswith((".pkl", ".pyth")):
            raise CheckpointError(
                f"refusing to load {filename}: pickle files can run code when read. Convert it to a torch "
                f"state dict (.pth) or .safetensors first."
            )
        if filename.endswith(".safetensors"):
            return {"model": read_checkpoint(filename)}
        loaded = load_torch_file(filename)
        if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict) and loaded["model"]:
            return loaded  # a detectron2 checkpoint: model, optimizer, scheduler, iteration, ...
        return {"model": unwrap_state_dict(loaded, source=filename)}

    def load_model_weights(self, path: str) -> list[str]:
        """Load only the model's weights from ``path`` (for inference); returns the model's keys the file
        did not provide."""
        incompatible = self._load_model(self._load_file(self.path_manager.get_local_path(path)))
        self._log_incompatible_keys(incompatible)
        return list(incompatible.missing_keys)

    def _load_model(self, checkpoint: dict):
        # A model may know other layouts of its own checkpoints (pe_deta reads the released DETA code's).
        adapt = getattr(self.model, "adapt_checkpoint", None)
        if adapt is not None:
            checkpoint["model"], notes = adapt(checkpoint["model"])
            for note in notes:
                logger.info("%s: %s", type(self.model).__name__, note)
        encoder = find_pe_encoder(self.model)
        if encoder is not None and vision_towers(checkpoint["model"]):
            checkpoint["model"], notes = fit_pe_weights(checkpoint["model"], *encoder)
            for note in notes:
                logger.info("PE backbone: %s", note)
        elif encoder is not None:
            logger.warning("the checkpoint holds no PE encoder: the backbone keeps its current weights")
        return super()._load_model(checkpoint)


class PEWeightsHandler(PathHandler):
    """detectron2 paths ``pe://<MODEL>`` and ``hf://<repo>:<file>``, resolved by
    :func:`pe_dense.models.resolve_weights`."""

    def _get_supported_prefixes(self) -> list[str]:
        return ["pe://", "hf://"]

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        if path.startswith("pe://"):
            return str(resolve_weights(path[len("pe://"):], "hub"))
        return str(resolve_weights("", path))

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        return open(self._get_local_path(path), mode, buffering=buffering)


PathManager.register_handler(PEWeightsHandler())
