"""Layer-wise learning-rate decay for PE parameter names (the ViTDet/BEiT recipe, PE's key names).

Shared by the detectron2 and mmsegmentation integrations: both name the encoder's parameters under
a ``backbone`` prefix.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"\.resblocks\.(\d+)\.")
_EMBEDDINGS = (".conv1.", ".positional_embedding", ".class_embedding", ".ln_pre.")


def pe_lr_decay_rate(name: str, lr_decay_rate: float = 1.0, num_layers: int = 12) -> float:
    """The lr multiplier of parameter ``name`` of a model whose backbone is a PE encoder.

    Embeddings count as layer 0, block i as layer i + 1, everything outside the backbone as layer
    num_layers + 1 (multiplier 1); the multiplier is ``lr_decay_rate ** (num_layers + 1 - layer)``.
    detectron2 takes it as ``get_default_optimizer_params(lr_factor_func=...)``; mmsegmentation
    through ``PELayerDecayOptimizerConstructor``.
    """
    layer = num_layers + 1
    if name.startswith("backbone"):
        block = _BLOCK.search(name)
        if block:
            layer = int(block[1]) + 1
        elif any(part in name + "." for part in _EMBEDDINGS):
            layer = 0
    return lr_decay_rate ** (num_layers + 1 - layer)
