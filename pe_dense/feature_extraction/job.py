"""The features job: items in fixed shards, each shard computed by one rank (shard k by rank k mod world
size, so the store does not depend on how many processes made it), batches grouped by input size, shards
written atomically, finished shards kept by a resumed run, and the manifest written by rank 0 at the end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..atomic_files import atomic_output
from ..feature_store import POOLED, STORAGE_DTYPES, read_shard, shard_path, write_manifest, write_shard
from ..models.inference import autocast
from ..models.shift_stitch import shift_and_stitch
from ..models.vision_transformer import PEVisionTransformer
from ..viz.images import colors_to_image
from ..viz.pca import pca_rgb
from .inputs import Item, LoadedItems, Resize

PICTURES = "pictures"


def output_names(layers: Sequence[int], pooled: bool = False) -> list[str]:
    return [f"layer_{layer}" for layer in layers] + ([POOLED] if pooled else [])


def shards_of(items: Sequence[Item], shard_size: int) -> list[Sequence[Item]]:
    return [items[start:start + shard_size] for start in range(0, len(items), shard_size)]


def fingerprint(header: dict, shard: Sequence[Item]) -> str:
    """What a shard's values depend on: the run's settings and the shard's items."""
    text = json.dumps({"header": header, "items": [item.name for item in shard]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def shards_to_run(out: Path, shards: Sequence[Sequence[Item]], header: dict, rank: int, world: int) -> list[int]:
    """This rank's shards that are not in ``out`` yet; a shard already there must have been made by the same
    settings from the same items (a resumed run), or the run stops."""
    todo = []
    for index in range(rank, len(shards), world):
        path = shard_path(out, index)
        if not path.exists():
            todo.append(index)
        elif read_shard(path)["settings"] != fingerprint(header, shards[index]):
            raise ValueError(f"{path} was written by a run with other settings or inputs; --resume continues only "
                             "the same run (use --force to start over)")
    return todo


def run_shards(encoder: PEVisionTransformer, items: Sequence[Item], out: Path, header: dict, *, resize: Resize,
               layers: Sequence[int], batch_size: int, shard_size: int, workers: int = 0, pooled: bool = False,
               stride: Optional[int] = None, pictures: bool = False, strict: bool = False, rank: int = 0,
               world: int = 1, progress: bool = True) -> int:
    """Compute and write this rank's missing shards; returns how many items failed in them. ``pooled`` adds
    the CLIP embedding of Core models; ``stride``, a denser grid by shift-and-stitch (None: one token a patch).
    With ``strict`` the first item that cannot be read raises ValueError, and the shard it was in is not
    written."""
    if pooled and stride not in (None, encoder.patch_size):
        raise ValueError("the pooled embedding is of the plain pass: no stride with pooled")
    shards = shards_of(items, shard_size)
    todo = shards_to_run(out, shards, header, rank, world)
    pending = [item for index in todo for item in shards[index]]
    loaded = iter(DataLoader(LoadedItems(pending, resize), batch_size=None, num_workers=workers))
    batcher = Batcher(encoder, layers, pooled, batch_size, header["precision"], STORAGE_DTYPES[header["dtype"]],
                      stride)
    failed = 0
    with tqdm(total=len(pending), unit="item", disable=not progress or not pending) as bar:
        for index in todo:
            failures, sizes = [], {}
            for _ in shards[index]:
                position, inputs, image_size, error = next(loaded)
                item = pending[position]
                bar.update()
                if error is not None:
                    if strict:
                        raise ValueError(f"{item.name}: {error}")
                    failures.append({"item": item.name, "reason": error})
                    continue
                sizes[item.name] = {"input_size": list(inputs.shape[1:]), "image_size": list(image_size)}
                batcher.add(item.name, inputs)
            features = batcher.flush()
            if pictures:
                _write_pictures(out, features, sizes, output_names(layers)[0])
            records = [{"name": item.name, **sizes[item.name]} for item in shards[index] if item.name in sizes]
            write_shard(shard_path(out, index), features, records, failures, fingerprint(header, shards[index]))
            failed += len(failures)
    return failed


class Batcher:
    """Model inputs grouped by size, each group run as soon as it makes a batch (so that aspect-preserving
    inputs of a few sizes still run in full batches); ``flush`` runs the rest and hands over every result,
    item -> output -> tensor in the storage dtype."""

    def __init__(self, encoder: PEVisionTransformer, layers: Sequence[int], pooled: bool, batch_size: int,
                 precision: str, dtype: torch.dtype, stride: Optional[int] = None):
        self.encoder, self.layers, self.pooled, self.stride = encoder, layers, pooled, stride
        self.batch_size, self.precision, self.dtype = batch_size, precision, dtype
        self.device = next(encoder.parameters()).device
        self.waiting: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
        self.done: dict[str, dict[str, torch.Tensor]] = {}

    def add(self, name: str, inputs: torch.Tensor) -> None:
        group = self.waiting.setdefault(tuple(inputs.shape), [])
        group.append((name, inputs))
        if len(group) == self.batch_size:
            self._run(self.waiting.pop(tuple(inputs.shape)))

    def flush(self) -> dict[str, dict[str, torch.Tensor]]:
        for group in self.waiting.values():
            self._run(group)
        done, self.waiting, self.done = self.done, {}, {}
        return done

    def _run(self, group: list[tuple[str, torch.Tensor]]) -> None:
        batch = torch.stack([inputs for _, inputs in group]).to(self.device)
        with torch.inference_mode(), autocast(self.device, self.precision):
            if self.pooled:
                maps, embedding = self.encoder.dense_features_and_embedding(batch, self.layers)
                maps = [*maps, embedding]
            else:
                maps = shift_and_stitch(self.encoder, batch, self.stride or self.encoder.patch_size, self.layers)
        for i, (name, _) in enumerate(group):
            # a copy per item: a shard holds no views of a batch
            self.done[name] = {output: m[i].to("cpu", self.dtype, copy=True)
                               for output, m in zip(output_names(self.layers, self.pooled), maps)}


def picture_path(out: Path, name: str) -> Path:
    """pictures/<item>.png inside the store whatever the item's name: an absolute path's root is dropped and
    a '..' becomes '__'."""
    parts = ["__" if part == ".." else part for part in PurePosixPath(name).parts if part != "/"]
    return out / PICTURES / f"{PurePosixPath(*parts)}.png"


def _write_pictures(out: Path, features: dict, sizes: dict, output: str) -> None:
    """The first three principal components of ``output`` as RGB, at the image's size: pictures/<item>.png."""
    for name, outputs in features.items():
        path = picture_path(out, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            colors_to_image(pca_rgb(outputs[output].float()), tuple(sizes[name]["image_size"])).save(tmp)


def finish(out: Path, header: dict, items: Sequence[Item], shard_size: int, listing_failures: list[dict]) -> dict:
    """The manifest, from every shard (rank 0, once all ranks are done)."""
    shards = [shard_path(out, index) for index in range(len(shards_of(items, shard_size)))]
    videos: dict[str, list[str]] = {}
    for item in items:
        if item.frame is not None:
            videos.setdefault(item.name.rsplit("/", 1)[0], []).append(item.name)
    return write_manifest(out, header, shards, listing_failures, videos)
