"""Reading videos frame by frame (files through PyAV, or folders of frames) and writing them."""

from __future__ import annotations

import os
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
from PIL import Image

from ..atomic_files import atomic_output
from ..data.image_sources import list_images
from ..models.preprocess import load_image

PathLike = Union[str, os.PathLike]
DEFAULT_FPS = 24.0
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")


def _av():
    try:
        import av
    except ImportError:
        raise ImportError("reading and writing video files needs PyAV: pip install av") from None
    return av


class VideoFrames:
    """The frames of a video file or of a folder of images, decoded one at a time, in order.

    Iterating yields ``(name, RGB PIL image)``: the file stem for folders (so DAVIS frame names carry
    over to the outputs), a zero-padded index for video files.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video '{self.path}' does not exist")
        self.files: Optional[list[Path]] = None
        if self.path.is_dir():
            self.files = list_images(self.path)
            if not self.files:
                raise ValueError(f"folder '{self.path}' holds no image frames")
            self.total, self.fps = len(self.files), DEFAULT_FPS
            return
        av = _av()
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise ValueError(f"'{self.path}' has no video stream")
                stream = container.streams.video[0]
                self.total = stream.frames or None  # 0 when the container does not say
                self.fps = float(stream.average_rate) if stream.average_rate else DEFAULT_FPS
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot read '{self.path}' as a video ({e})") from None

    def count(self) -> int:
        """The number of frames: from the container's header, or by reading its packets (no decoding) when the
        header does not say."""
        if self.total:
            return self.total
        av = _av()
        try:
            with av.open(str(self.path)) as container:
                return sum(packet.size > 0 for packet in container.demux(video=0))
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot read '{self.path}' as a video ({e})") from None

    def first(self) -> Image.Image:
        """The first frame (decodes only that one)."""
        for _, image in self:
            return image

    def __iter__(self) -> Iterator[tuple[str, Image.Image]]:
        if self.files is not None:
            for file in self.files:
                yield file.stem, load_image(file)
            return
        av = _av()
        index = 0
        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(video=0):
                    yield f"{index:05d}", frame.to_image().convert("RGB")
                    index += 1
        except av.error.FFmpegError as e:
            raise ValueError(f"'{self.path}' is corrupt after frame {index} ({e})") from None
        if index == 0:
            raise ValueError(f"video '{self.path}' contains no frames")


@contextmanager
def video_writer(path: PathLike, fps: float = DEFAULT_FPS) -> Iterator[Callable[[np.ndarray], None]]:
    """Yields ``write(frame)`` for (H, W, 3) uint8 frames; the H.264 file appears at ``path`` only
    when the block finishes without error (odd sizes are padded by one pixel: yuv420p needs even)."""
    av = _av()
    with atomic_output(path) as tmp:
        container = av.open(str(tmp), mode="w")
        stream = None
        try:
            def write(frame: np.ndarray) -> None:
                nonlocal stream
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.height, stream.width = (frame.shape[0] + 1) // 2 * 2, (frame.shape[1] + 1) // 2 * 2
                    stream.pix_fmt = "yuv420p"
                padded = np.pad(frame, ((0, stream.height - frame.shape[0]), (0, stream.width - frame.shape[1]),
                                        (0, 0)), mode="edge")
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(padded),
                                                                       format="rgb24")))

            yield write
            if stream is None:
                raise ValueError(f"no frames were written to {path}")
            container.mux(stream.encode())  # flush the encoder
        finally:
            container.close()
