"""Writing outputs so that a file is either complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union


@contextmanager
def atomic_output(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the right format); it
    replaces ``path`` only if the block succeeds, and is removed otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Union[str, os.PathLike], data, indent: int | None = 2) -> None:
    """``data`` as a JSON file at ``path``, written atomically (:func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent))
