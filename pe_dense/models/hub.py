"""Finding a released checkpoint: a local file, the $PE_DENSE_WEIGHTS folder, or the Hugging Face hub.

Released weights live at ``facebook/<NAME>`` as ``<NAME>.pt``. Downloads go through huggingface_hub
(its cache, or $PE_DENSE_CACHE); where the hub cannot be reached the error says how to pass a file.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

WEIGHTS_DIR_ENV = "PE_DENSE_WEIGHTS"  # folder searched first for <NAME>.pt / <NAME>.safetensors / <NAME>.pth
CACHE_DIR_ENV = "PE_DENSE_CACHE"  # where hub downloads go (default: huggingface_hub's own cache)
HUB_ALIASES = ("hub", "pretrained")  # weights="hub" means "the released checkpoint of this model"


class WeightsNotFoundError(FileNotFoundError):
    """No checkpoint could be found or downloaded."""


def hub_location(name: str) -> tuple[str, str]:
    """(repo_id, filename) of a released model on the Hugging Face hub."""
    return f"facebook/{name}", f"{name}.pt"


def resolve_weights(name: str, weights: Union[str, os.PathLike]) -> Path:
    """A local path to the checkpoint meant by ``weights`` for model ``name``.

    ``weights`` is a file path, ``"hub"`` (the released checkpoint of ``name``), or
    ``"hf://<repo>:<file>"`` for any file on the hub.
    """
    spec = str(weights)
    if spec in HUB_ALIASES:
        local = _from_weights_dir(name)
        return local if local is not None else _download(*hub_location(name))
    if spec.startswith("hf://"):
        repo, sep, filename = spec[len("hf://"):].partition(":")
        if not sep or not repo or not filename:
            raise ValueError(f"expected hf://<repo>:<file>, got '{spec}'")
        return _download(repo, filename)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint file '{path}' does not exist")
    return path


def _from_weights_dir(name: str) -> Optional[Path]:
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    for suffix in (".pt", ".safetensors", ".pth"):
        candidate = Path(folder).expanduser() / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _download(repo: str, filename: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise WeightsNotFoundError(
            f"huggingface_hub is not installed, so {repo}/{filename} cannot be downloaded; "
            f"pip install huggingface_hub, or pass weights='/path/to/{filename}'"
        ) from None
    cache = os.environ.get(CACHE_DIR_ENV)
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache, local_files_only=True))
    except Exception:  # not cached yet
        pass
    try:
        _check_hub_reachable()
        return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache))
    except Exception as e:  # offline, no such repo, gated, HTTP errors: all end the same way for the user
        raise WeightsNotFoundError(
            f"could not get {filename} from the Hugging Face hub repo {repo} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}).\n"
            f"Download it where the hub is reachable (huggingface-cli download {repo} {filename}) and pass "
            f"weights='/path/to/{filename}', or put it in the folder named by ${WEIGHTS_DIR_ENV}."
        ) from None


def _check_hub_reachable(timeout: float = 3.0) -> None:
    """Fail within ``timeout`` seconds where the hub's host cannot be reached (huggingface_hub would
    retry for half a minute). Skipped behind a proxy, which a direct connection cannot judge."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach {endpoint.hostname}:{port} ({e})") from None
