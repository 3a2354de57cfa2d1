"""Tracking objects through a video by label propagation over an encoder's dense features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from PIL import Image

from ..models.inference import PRECISIONS, autocast, with_matmul_weights_in
from ..models.preprocess import PE_PIXELS, Pixels, aspect_size, preprocess
from .propagation import LabelPropagator, PropagationConfig, corner_view, labels_at_pixels, one_hot_labels

PROTOCOL_SHORT_SIDE = 480  # the DAVIS protocol's frame size (docs/protocols.md#davis-label-propagation)
FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # (1, 3, H, W) normalised by ``pixels`` -> (1, C, H/p, W/p)


@dataclass
class TrackedFrame:
    index: int
    name: str
    image: Image.Image
    labels: Optional[np.ndarray]  # (H, W) uint8 label values; None for frames replayed on resume
    soft: Optional[torch.Tensor]  # (L, h, w) token soft labels, channels in the order of ``values``


class VideoTracker:
    """Propagates a first-frame label map through frames, one frame at a time.

    Frames are resized so the short side is ``short_side`` (both sides rounded to multiples of the
    patch size), as the DAVIS protocol does at 480 px; outputs come back at each frame's own size.
    """

    def __init__(self, features: FeatureFn, patch_size: int, config: Optional[PropagationConfig] = None,
                 short_side: int = PROTOCOL_SHORT_SIDE, device: torch.device | str = "cpu",
                 pixels: Pixels = PE_PIXELS):
        if short_side < patch_size:
            raise ValueError(f"short_side {short_side} is smaller than the patch size {patch_size}")
        self.features_fn, self.patch_size = features, patch_size
        self.config = config or PropagationConfig()  # the protocol's defaults
        self.short_side, self.device, self.pixels = short_side, torch.device(device), pixels

    @classmethod
    def from_encoder(cls, encoder, *, layer: int = -1, precision: str = "fp32", **kwargs) -> "VideoTracker":
        """Track with ``encoder.dense_features`` at ``layer`` (the protocol uses the last layer).

        In bf16 or fp16 on the CPU the tracker keeps its own copy of the encoder with the matrix weights
        already cast (:func:`~pe_dense.models.inference.with_matmul_weights_in`), about half the
        encoder's memory, instead of casting them again for every frame."""
        encoder.layer_index(layer)  # fail now on a bad layer
        device = next(encoder.parameters()).device
        dtype = PRECISIONS.get(precision)
        if device.type == "cpu" and dtype is not None:  # cast the weights once, not on every frame
            encoder = with_matmul_weights_in(encoder, dtype)

        def features(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), autocast(device, precision):
                return encoder.dense_features(batch, layer).float()

        return cls(features, encoder.config.patch_size, device=device, pixels=encoder.config.pixels, **kwargs)

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) fed to the encoder for a ``width`` x ``height`` frame."""
        return aspect_size(width, height, self.patch_size, short_side=self.short_side)

    def check_frame_size(self, width: int, height: int) -> None:
        """Fail before any output on settings the first propagated frame would refuse: ``topk`` beyond
        what a corner token sees in the first frame at this frame size."""
        h, w = (side // self.patch_size for side in self.input_size(width, height))
        visible = corner_view(h, w, self.config.radius)
        if self.config.topk > visible:
            raise ValueError(
                f"topk={self.config.topk} is more than the {visible} tokens a corner token sees in the first frame "
                f"({w}x{h} tokens at short side {self.short_side}, radius {self.config.radius}): lower topk or "
                "raise the short side or the radius")

    def _features(self, image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
        batch = preprocess(image, size, self.pixels)[None].to(self.device)
        return self.features_fn(batch)[0]

    def track(self, frames: Iterable[tuple[str, Image.Image]], first_labels: np.ndarray, *, start: int = 1,
              saved_soft: Optional[Callable[[int], torch.Tensor]] = None) -> Iterator[TrackedFrame]:
        """Yield every frame with its labels; the first frame carries ``first_labels`` (H, W) uint8.

        To resume after frame ``start - 1``, pass ``saved_soft(i)`` giving the soft labels recorded
        for frame i: frames before ``start`` are replayed (features only for the context window) and
        yielded with ``labels=None``; later frames are exactly what an uninterrupted run gives.
        """
        frames = iter(frames)
        try:
            name, image = next(frames)
        except StopIteration:
            raise ValueError("the video has no frames") from None
        if first_labels.shape != (image.height, image.width):
            raise ValueError(f"the first-frame mask is {first_labels.shape[1]}x{first_labels.shape[0]} but the "
                             f"frames are {image.width}x{image.height}")
        if start > 1 and saved_soft is None:
            raise ValueError("resuming needs the saved soft labels (saved_soft)")
        values = np.union1d(np.unique(first_labels), [0]).astype(np.uint8)  # background always has a channel
        channels = np.searchsorted(values, first_labels)
        size = self.input_size(image.width, image.height)
        grid = (size[0] // self.patch_size, size[1] // self.patch_size)
        coarse = Image.fromarray(channels.astype(np.uint8)).resize(grid[::-1], Image.NEAREST)
        first_soft = one_hot_labels(torch.from_numpy(np.array(coarse)), len(values)).permute(2, 0, 1)
        propagator = LabelPropagator(self._features(image, size), first_soft.to(self.device), self.config)
        yield TrackedFrame(0, name, image, first_labels.astype(np.uint8), first_soft)
        lookup = torch.from_numpy(values)
        for index, (name, image) in enumerate(frames, start=1):
            if (image.width, image.height) != tuple(first_labels.shape[::-1]):
                raise ValueError(f"frame {index} ({name}) is {image.width}x{image.height}, the first frame was "
                                 f"{first_labels.shape[1]}x{first_labels.shape[0]}")
            if index < start:
                if index >= start - self.config.context:
                    propagator.remember(self._features(image, size), saved_soft(index).to(self.device))
                yield TrackedFrame(index, name, image, None, None)
                continue
            soft = propagator.step(self._features(image, size))
            pixels = labels_at_pixels(soft, self.patch_size, (image.height, image.width)).cpu()
            yield TrackedFrame(index, name, image, lookup[pixels].numpy(), soft.cpu())
