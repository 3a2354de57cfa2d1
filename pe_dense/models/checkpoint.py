"""Reading PE checkpoints safely and loading them into a :class:`PEVisionTransformer`.

Files are read with ``torch.load(weights_only=True)`` or safetensors: a checkpoint can never run
code. Any nesting ("state_dict", "weights", "model", "module") and any prefix in front of the
vision tower ("module.", "visual.", "backbone.net." of the detectron2 checkpoints, ...) is accepted,
in the official or timm key layout. Everything is checked against the model before a single tensor
is copied, so a failed load changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from ..atomic_files import atomic_output
from .configs import MODEL_CONFIGS, PEVisionConfig
from .convert import ConversionError, resize_patch_embed, timm_to_official

StateDict = dict[str, torch.Tensor]
PathLike = Union[str, os.PathLike]

_WRAPPERS = ("state_dict", "weights", "model", "module")
# A vision tower is found by its patch embedding next to its position table, in either layout.
_ANCHORS = {"official": ("conv1.weight", "positional_embedding"), "timm": ("patch_embed.proj.weight", "pos_embed")}
_BLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the model."""


def read_checkpoint(path: PathLike) -> StateDict:
    """The tensors of a ``.pt``/``.pth``/``.safetensors`` file, unwrapped from any known nesting."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path} is truncated or not a safetensors file ({e})") from None
    return unwrap_state_dict(load_torch_file(path), source=str(path))


def load_torch_file(path: PathLike):
    """Everything a torch checkpoint holds (tensors, numbers, strings, containers), read without
    unpickling code: a file that holds other Python objects is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # Zip-format files are memory-mapped, so a multi-GB checkpoint is not read into RAM before copying.
        # DETR-family training scripts save their argparse.Namespace beside the weights: it holds only
        # plain values and rebuilding it runs no code, so it is allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        lines = str(e).strip().splitlines()
        if not lines or "Weights only load failed" not in lines[0]:
            detail = lines[0] if lines else e
            raise CheckpointError(f"{path} is truncated or not a torch checkpoint ({detail})") from None
        detail = next((line.strip() for line in lines if "Unsupported" in line), "")
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors, and unpickling them could run "
            f"code. {detail}"
        ) from None
    except Exception as e:  # a damaged file can fail anywhere inside the unpickler, with any exception type
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint ({detail})") from None


def unwrap_state_dict(obj, source: str = "checkpoint") -> StateDict:
    """Descend through wrapper keys until a flat dict of tensors remains."""
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
            raise CheckpointError(f"{source} is not a state dict: entries {odd} are not tensors")
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source} holds no tensors (found {type(obj).__name__})")
    return dict(obj)


def _is_tensor_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def save_state_dict(state: StateDict, path: PathLike) -> None:
    """Write a state dict (safetensors for ``.safetensors``, else torch) atomically."""
    with atomic_output(path) as tmp:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        else:
            torch.save(state, tmp)


def vision_towers(state: StateDict) -> list[tuple[str, str]]:
    """(layout, prefix) of every vision tower in a state dict; layout is "official" or "timm"."""
    found = []
    for layout, (patch, table) in _ANCHORS.items():
        for key in state:
            if key.endswith(patch):
                p = key[: -len(patch)]
                if (p == "" or p.endswith(".")) and p + table in state:
                    found.append((layout, p))
    return found


def find_vision_tower(state: StateDict, prefix: Optional[str] = None) -> tuple[str, str]:
    """(layout, prefix) of the one vision tower in a state dict (under ``prefix`` if given)."""
    found = [(layout, p) for layout, p in vision_towers(state) if prefix is None or p == prefix]
    if len(found) == 1:
        return found[0]
    if not found:
        where = f" under prefix '{prefix}'" if prefix is not None else ""
        raise CheckpointError(
            f"no PE vision tower found{where}: expected 'conv1.weight' and 'positional_embedding' (official) or "
            f"'patch_embed.proj.weight' and 'pos_embed' (timm); first keys are {list(state)[:5]}"
        )
    raise CheckpointError(f"several vision towers found {found}; pass prefix= to choose one")


def to_official(state: StateDict, prefix: Optional[str] = None) -> tuple[StateDict, list[str]]:
    """The vision tower of any supported state dict, in official keys without prefix, plus the ignored keys."""
    layout, found_prefix = find_vision_tower(state, prefix)
    tower = {k[len(found_prefix):]: v for k, v in state.items() if k.startswith(found_prefix)}
    ignored = [k for k in state if not k.startswith(found_prefix)]
    if layout == "timm":
        try:
            tower = timm_to_official(tower)
        except ConversionError as e:
            raise CheckpointError(str(e)) from None
    return tower, ignored


@dataclasses.dataclass
class LoadReport:
    """What loading did: keys that did not match, and the adaptations made on the way."""

    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[str] = dataclasses.field(default_factory=list)  # "key: checkpoint (...) vs model (...)"
    adapted: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)  # outside the vision tower (text tower, heads)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("shape mismatch", self.mismatched), ("adapted", self.adapted)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
                lines.append(f"  {title} ({len(items)}): {shown}")
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)} keys outside the vision tower")
        return "\n".join(lines) or "  all keys matched"


def adapt_to_model(state: StateDict, model) -> tuple[StateDict, list[str]]:
    """Fit an official state dict to the model's build options: position-table shape, patch size,
    dropped class token, dropped trailing blocks. Returns the new dict and what was changed."""
    state, notes = dict(state), []
    table = state.get("positional_embedding")
    if table is not None and table.ndim == 3 and table.shape[0] == 1:  # detectron2 layout (1, N, C)
        table = state["positional_embedding"] = table[0]
    dropped_cls = not model.use_cls_token and model.config.use_cls_token
    if dropped_cls and table is not None and table.ndim == 2 and table.shape[0] == model.config.pretrain_grid**2:
        # A detection checkpoint without the class row: the row is never used, so it is filled with zeros.
        state["positional_embedding"] = torch.cat([table.new_zeros(1, table.shape[1]), table])
        notes.append("positional_embedding has no class row (the class token is dropped): a zero row added")
    kernel = state.get("conv1.weight")
    released = (model.config.patch_size,) * 2
    if (kernel is not None and kernel.ndim == 4 and model.patch_size != model.config.patch_size
            and tuple(kernel.shape[-2:]) == released):
        # Only the released kernel is resized, and only for a model built with another patch size (ViTDet
        # runs patch-14 models at 16); any other kernel shape is a mismatch that compare() reports.
        state["conv1.weight"] = resize_patch_embed(kernel, model.patch_size)
        notes.append(f"conv1.weight resized from {kernel.shape[-1]}px to {model.patch_size}px patches")
    if dropped_cls and state.pop("class_embedding", None) is not None:
        notes.append("class_embedding dropped (model runs without the class token)")
    dropped = set()
    for key in list(state):
        block = _BLOCK_KEY.match(key)
        if block and model.num_blocks <= int(block[1]) < model.config.depth:
            dropped.add(int(block[1]))
            del state[key]
    if dropped:
        notes.append(f"blocks {min(dropped)}..{max(dropped)} dropped (model keeps {model.num_blocks} blocks)")
    return state, notes


def compare(state: StateDict, model) -> LoadReport:
    expected = model.state_dict()
    report = LoadReport()
    report.missing = [k for k in expected if k not in state]
    report.unexpected = [k for k in state if k not in expected]
    report.mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    return report


def guess_configs(state: StateDict) -> list[str]:
    """Names of the released configs whose architecture fits an official state dict."""
    kernel, table = state.get("conv1.weight"), state.get("positional_embedding")
    if kernel is None or table is None:
        return []
    blocks = {int(m[1]) for k in state if (m := _BLOCK_KEY.match(k))}
    mlp = state.get("transformer.resblocks.0.mlp.c_fc.weight")

    def fits(c: PEVisionConfig) -> bool:
        return (
            kernel.shape[0] == c.width
            and table.shape[-2] == int(c.use_cls_token) + c.pretrain_grid**2
            and len(blocks) == c.depth
            and (mlp is None or mlp.shape[0] == c.mlp_width)
            and ("class_embedding" in state) == c.use_cls_token
            and ("proj" in state) == (c.pool is not None)
            and ("transformer.resblocks.0.ls_1.gamma" in state) == (c.ls_init_value is not None)
        )

    return [name for name, c in MODEL_CONFIGS.items() if fits(c) and not name.endswith("-Tiling")]


def load_weights(
    model,
    weights: Union[PathLike, StateDict],
    *,
    strict: bool = True,
    prefix: Optional[str] = None,
) -> LoadReport:
    """Load a checkpoint file or state dict (official or timm layout) into ``model``.

    With ``strict`` (the default) any missing key, unexpected key or shape mismatch raises
    :class:`CheckpointError` with a readable report and nothing is loaded. Without it, the matching
    tensors are loaded and the report is returned. Shape mismatches always raise.
    """
    source = str(weights) if not isinstance(weights, Mapping) else "state dict"
    state = read_checkpoint(weights) if not isinstance(weights, Mapping) else unwrap_state_dict(weights)
    state, ignored = to_official(state, prefix)
    state, adapted = adapt_to_model(state, model)
    report = compare(state, model)
    report.adapted, report.ignored = adapted, ignored
    if report.mismatched or (strict and not report.ok):
        guesses = [g for g in guess_configs(state) if g != model.config.name]
        hint = f"\n  the checkpoint looks like: {', '.join(guesses)}" if guesses else ""
        raise CheckpointError(f"{source} does not fit {model.config.name}:\n{report}{hint}")
    broken = [key for key, value in state.items() if value.is_floating_point() and not value.isfinite().all()]
    if broken:  # a damaged or diverged checkpoint: every output would be NaN
        shown = ", ".join(broken[:5]) + (f", ... ({len(broken) - 5} more)" if len(broken) > 5 else "")
        raise CheckpointError(f"{source} holds NaN or infinite values in {len(broken)} tensor(s): {shown}")
    expected = model.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key in expected:
                expected[key].copy_(value)
    return report
