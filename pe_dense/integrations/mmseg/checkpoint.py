"""mmengine reads local checkpoints through pe_dense: never unpickling code.

mmengine's own local loader is a bare ``torch.load``: under torch < 2.6 it unpickles anything, and
under later versions it refuses mmengine's own training checkpoints (they hold the message hub's
``HistoryBuffer`` and numpy arrays). The loader registered here reads with ``weights_only=True``
and allows exactly those data-only types, so ``load_from``, ``--resume`` and ``init_cfg`` checkpoints
load safely, and a file carrying any other object is refused with a clear error.

One more thing is needed: ``HistoryBuffer`` pickles its statistics methods by reference, which pickle
writes as ``builtins.getattr(HistoryBuffer, "mean")``. ``getattr`` itself is not allowed; in its place
the unpickler gets a function that returns those four methods and refuses anything else.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

from ...models.checkpoint import CheckpointError, load_torch_file, read_checkpoint

_STATISTICS = ("min", "max", "current", "mean")


def _history_buffer_method(owner, name: str):
    """``getattr`` as an mmengine checkpoint may use it: HistoryBuffer's statistics methods only."""
    if owner is HistoryBuffer and name in _STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"the checkpoint asks for attribute '{name}' of {owner!r}, which is not one of "
                                 f"HistoryBuffer's statistics methods")


def _numpy_globals() -> list:
    """numpy's array and scalar reconstruction and its dtypes, under numpy 1.x or 2.x names."""
    multiarray = getattr(np, "_core", None) or np.core
    dtypes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_)}
    return [np.ndarray, np.dtype, multiarray.multiarray._reconstruct, multiarray.multiarray.scalar, *dtypes]


# What mmengine's Runner writes besides tensors: the message hub's buffers (numpy arrays and scalars).
SAFE_GLOBALS = [HistoryBuffer, *_numpy_globals(), (_history_buffer_method, "builtins.getattr")]


def load_from_local_safely(filename: str, map_location=None) -> dict:
    """A checkpoint as mmengine expects it: a training checkpoint as saved, a bare state dict
    (any PE layout, ``.pt`` or ``.safetensors``) as ``{"state_dict": ...}``."""
    if filename.endswith((".pkl", ".pyth")):
        raise CheckpointError(f"refusing to load {filename}: pickle files can run code when read. Convert it to a "
                              f"torch state dict (.pth) or .safetensors first.")
    if filename.endswith(".safetensors"):
        return {"state_dict": read_checkpoint(filename)}
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return load_torch_file(filename)


CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safely, force=True)
