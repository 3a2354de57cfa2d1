"""PE in mmsegmentation, imported by configs through ``custom_imports``: the encoder as a backbone,
the linear probe head, depth heads and a gradient loss, layer-wise lr decay, the built-in scenes and
depth scenes datasets, declared datasets of one's own (custom_data), checked loading transforms, and
safe checkpoint reading for mmengine (registered on import).

Importing this package needs mmsegmentation, mmengine and mmcv with its compiled ops (docs/install.md).
"""

from . import checkpoint  # noqa: F401  (registers the safe checkpoint loader)
from .backbone import PEBackbone
from .custom_data import DeclaredDepthDataset, DeclaredSegDataset
from .datasets import (
    LoadCheckedAnnotations,
    LoadCheckedDepth,
    LoadCheckedImage,
    PEDepthScenesDataset,
    PEScenesDataset,
    SegmentationDataError,
)
from .depth_heads import DPTDepthHead, LinearBinsDepthHead
from .depth_losses import DepthGradientLoss
from .heads import LinearProbeHead
from .lr_decay import PELayerDecayOptimizerConstructor

__all__ = ["DPTDepthHead", "DeclaredDepthDataset", "DeclaredSegDataset", "DepthGradientLoss", "LinearBinsDepthHead",
           "LinearProbeHead", "LoadCheckedAnnotations",
           "LoadCheckedDepth", "LoadCheckedImage", "PEBackbone", "PEDepthScenesDataset",
           "PELayerDecayOptimizerConstructor", "PEScenesDataset", "SegmentationDataError"]
