"""The configs that ship with pe_dense, by name, as detectron2's model zoo gives its own:
``get("segmentation/ade20k/linear_PEspatial_B_ade20k.py")`` is that file in the installed package, and
``--config pe_dense:NAME`` takes it wherever a command or tool reads a config. The names are the paths under
the repository's configs/ (detection/, segmentation/, depth/, align/, _base_/), and under ``DETA/`` those of
projects/DETA/configs; setup.py links (or copies) those folders here, so the files are the same.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Union

PREFIX = "pe_dense:"


def _root() -> Path:
    return Path(str(files(__name__)))


def names(prefix: str = "") -> list[str]:
    """Every shipped config (not the ``_base_`` and ``common`` pieces they build on) whose name starts with
    ``prefix``, sorted."""
    root = _root()
    found = []
    for folder, dirs, filenames in os.walk(root, followlinks=True):  # the folders are links in a checkout
        dirs[:] = sorted(d for d in dirs if d not in ("_base_", "common", "__pycache__"))
        found += [Path(folder, f).relative_to(root).as_posix() for f in filenames
                  if f.endswith(".py") and Path(folder) != root]
    return sorted(name for name in found if name.startswith(prefix))


def get(name: str) -> Path:
    """The path of the shipped config ``name`` (e.g. ``depth/scenes/dpt_PEspatial_T_scenes.py``)."""
    path = _root() / name
    if not name.endswith(".py") or not path.is_file():
        close = [n for n in names() if Path(n).name == Path(name).name]
        hint = f"; did you mean {' or '.join(close)}?" if close else " (pe-dense configs lists them)"
        raise FileNotFoundError(f"pe_dense ships no config '{name}'{hint}")
    return path


def resolve(spec: Union[str, os.PathLike]) -> Path:
    """The config file a user names: ``pe_dense:NAME`` for a shipped one, else a path, which must exist."""
    text = os.fspath(spec)
    if text.startswith(PREFIX):
        return get(text[len(PREFIX):])
    if not Path(text).is_file():
        raise FileNotFoundError(f"config file '{text}' does not exist")
    return Path(text)
