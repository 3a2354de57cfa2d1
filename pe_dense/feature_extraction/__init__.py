"""``pe-dense features``: dense features of a whole collection (images, folders, lists, videos) into a
feature store (:mod:`pe_dense.feature_store`), in shards, resumable, over many processes under torchrun."""

from .inputs import Frames, Item, Resize, list_items
from .job import finish, run_shards

__all__ = ["Frames", "Item", "Resize", "finish", "list_items", "run_shards"]
