"""The compiled extension ``pe_dense._C``: whether it imports, and for which devices it has kernels."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def load_extension():
    """(module, None) when pe_dense._C imports, else (None, the reason)."""
    try:
        from .. import _C
    except ImportError as e:
        return None, str(e)
    return _C, None


def kernels_available(device: torch.device | str = "cpu") -> bool:
    """Whether compiled kernels exist for this device type."""
    extension, _ = load_extension()
    device_type = torch.device(device).type
    if extension is None:
        return False
    return device_type == "cpu" or (device_type == "cuda" and extension.cuda_built())
