"""The feature store that ``pe-dense features`` writes: safetensors shards and a JSON manifest, read lazily.

Layout of a store folder (docs/features.md#the-feature-store)::

    features.json              the manifest: model, weights, preprocessing, dtype, items, failures
    shards/00000.safetensors   tensors "<item>::<output>" (output: layer_-1, layer_4, ..., pooled)
    videos.safetensors         "<video>::mean_pooled", the mean of its frames' pooled embeddings

safetensors because every framework reads it, a reader maps the file and reads one tensor's bytes only,
and a shard written to a temporary name then renamed is complete or absent. Each shard carries its own
items, failures and the fingerprint of the settings that made it, so a resumed run checks what it keeps and
the manifest is rebuilt from the shards alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic_files import atomic_output, write_json

MANIFEST = "features.json"
SHARDS = "shards"
VIDEOS = "videos.safetensors"
POOLED = "pooled"
VIDEO_MEAN = "mean_pooled"
FORMAT = "pe_dense.features/1"
KEY_SEPARATOR = "::"
_METADATA_KEY = "pe_dense"
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def tensor_key(item: str, output: str) -> str:
    return f"{item}{KEY_SEPARATOR}{output}"


def shard_path(folder: Union[str, os.PathLike], index: int) -> Path:
    return Path(folder) / SHARDS / f"{index:05d}.safetensors"


def write_shard(path: Path, features: dict[str, dict[str, torch.Tensor]], records: list[dict],
                failures: list[dict], settings: str) -> None:
    """One shard, atomically: ``features`` item -> output -> tensor (already in the storage dtype), ``records``
    the written items in order (name and sizes), ``failures`` the items that could not be read."""
    tensors = {tensor_key(item, output): t.contiguous() for item, outputs in features.items()
               for output, t in outputs.items()}
    metadata = {_METADATA_KEY: json.dumps({"settings": settings, "items": records, "failures": failures})}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_shard(path: Path) -> dict:
    """A shard's own record (settings, items with their tensor shapes, failures), from its header only."""
    with safe_open(str(path), framework="pt") as f:
        record = json.loads(f.metadata()[_METADATA_KEY])
        for item in record["items"]:
            prefix = item["name"] + KEY_SEPARATOR
            item["shapes"] = {k[len(prefix):]: list(f.get_slice(k).get_shape()) for k in f.keys()
                              if k.startswith(prefix)}
    return record


def write_manifest(folder: Path, header: dict, shards: list[Path], failures: list[dict],
                   videos: dict[str, list[str]]) -> dict:
    """``features.json`` from the shards' own records (in shard order) and ``failures`` found before any
    shard (inputs that could not be listed); with pooled embeddings, also the mean of each video's frames
    (``videos``: video -> its frames' item names)."""
    items, failed = {}, list(failures)
    for path in shards:
        record = read_shard(path)
        relative = path.relative_to(folder).as_posix()
        for item in record["items"]:
            name = item.pop("name")
            items[name] = {"shard": relative, **item}
        failed += record["failures"]
    manifest = {"format": FORMAT, **header, "shards": [p.relative_to(folder).as_posix() for p in shards],
                "items": items, "failures": failed}
    if POOLED in header["outputs"] and videos:
        manifest["videos"] = _write_video_means(folder, items, videos, STORAGE_DTYPES[header["dtype"]])
    write_json(folder / MANIFEST, manifest)
    return manifest


def _write_video_means(folder: Path, items: dict, videos: dict[str, list[str]], dtype: torch.dtype) -> dict:
    """videos.safetensors: per video, the mean of its stored frames' pooled embeddings (computed in float32,
    stored in the store's dtype)."""
    means, records = {}, {}
    for video, frames in videos.items():
        stored = [name for name in frames if name in items]
        if stored:
            mean = torch.stack([StoredItem(folder, name, items[name])[POOLED].float() for name in stored]).mean(0)
            means[tensor_key(video, VIDEO_MEAN)] = mean.to(dtype)
            records[video] = {"shard": VIDEOS, "frames": len(stored), "shapes": {VIDEO_MEAN: list(mean.shape)}}
    with atomic_output(folder / VIDEOS) as tmp:
        save_file(means, str(tmp))
    return records


class StoredItem(Mapping):
    """One item of a store: its outputs (``layer_-1``, ...) by name, each read from its shard when asked."""

    def __init__(self, folder: Path, name: str, record: dict):
        self.name, self.record = name, record
        self.path = folder / record["shard"]

    def __getitem__(self, output: str) -> torch.Tensor:
        if output not in self.record["shapes"]:
            raise KeyError(f"item '{self.name}' has no output '{output}' (it has {', '.join(self.record['shapes'])})")
        with safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(tensor_key(self.name, output))

    def __iter__(self) -> Iterator[str]:
        return iter(self.record["shapes"])

    def __len__(self) -> int:
        return len(self.record["shapes"])

    def __repr__(self) -> str:
        return f"StoredItem('{self.name}', {self.record['shapes']})"


class FeatureStore(Mapping):
    """A store written by ``pe-dense features``: ``store["images/cat.jpg"]["layer_-1"]`` is that item's
    tensor, read alone from its shard (other items and shards are not read). Iterating gives the item names
    in input order; ``manifest`` is the whole features.json (model, preprocessing, dtype, failures)."""

    def __init__(self, folder: Union[str, os.PathLike]):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"'{self.folder}' is not a feature store (no {MANIFEST})")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} manifest")
        self._items = self.manifest["items"]

    @property
    def failures(self) -> list[dict]:
        return self.manifest["failures"]

    @property
    def videos(self) -> dict[str, StoredItem]:
        """Per video file (stores with pooled embeddings): ``store.videos["clip.mp4"]["mean_pooled"]``."""
        return {name: StoredItem(self.folder, name, record) for name, record in self.manifest.get("videos", {}).items()}

    def __getitem__(self, name: str) -> StoredItem:
        if name not in self._items:
            raise KeyError(f"no item '{name}' in the store {self.folder}")
        return StoredItem(self.folder, name, self._items[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FeatureStore('{self.folder}', {len(self)} items, outputs {self.manifest['outputs']})"
