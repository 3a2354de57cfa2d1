"""A disk cache of SAM correspondence targets (safetensors, one file per image), so that later
epochs do not run SAM again. Entries live in a folder named after everything the targets depend
on (the teacher's settings and weights, the token grid, the picture of the image), so a changed
setting never reads stale targets."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic_files import atomic_output


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class TargetCache:
    def __init__(self, root: Union[str, os.PathLike], fingerprint: dict, dtype: torch.dtype = torch.float16):
        text = json.dumps(fingerprint, sort_keys=True)
        self.directory = Path(root) / _digest(text)[:16]
        self.directory.mkdir(parents=True, exist_ok=True)
        description = self.directory / "fingerprint.json"
        if not description.exists():
            with atomic_output(description) as tmp:
                tmp.write_text(text)
        self.dtype = dtype

    def _path(self, key: str) -> Path:
        return self.directory / f"{_digest(key)}.safetensors"

    def get(self, key: str) -> Optional[torch.Tensor]:
        """The stored targets of ``key``, or None (also for a damaged entry, which is then recomputed)."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return load_file(str(path))["targets"]
        except (SafetensorError, OSError, KeyError):
            return None

    def put(self, key: str, targets: torch.Tensor) -> torch.Tensor:
        """Store targets in the cache's dtype and return them as stored, so a first epoch trains on
        exactly what later epochs will read."""
        stored = targets.detach().to("cpu", self.dtype).contiguous()
        with atomic_output(self._path(key)) as tmp:
            save_file({"targets": stored}, str(tmp))
        return stored
