"""Video object tracking by zero-shot label propagation, video I/O and the DAVIS J&F metrics."""

from ..data.label_maps import davis_palette, read_label_png, write_label_png
from .davis import DavisLayout
from .metrics import Statistics, boundary_f, region_jaccard, score_sequence
from .propagation import LabelPropagator, PropagationConfig, labels_at_pixels, propagate_labels
from .run import track_video
from .tracker import TrackedFrame, VideoTracker
from .video import VideoFrames, video_writer

__all__ = ["DavisLayout", "LabelPropagator", "PropagationConfig", "Statistics", "TrackedFrame", "VideoFrames",
           "VideoTracker", "boundary_f", "davis_palette", "labels_at_pixels", "propagate_labels", "read_label_png",
           "region_jaccard", "score_sequence", "track_video", "video_writer", "write_label_png"]
