"""PE in mmsegmentation, imported by configs through ``custom_imports``: the encoder as a backbone,
the linear probe head, layer-wise lr decay, the built-in scenes dataset and checked loading
transforms, and safe checkpoint reading for mmengine (registered on import).

Importing this package needs mmsegmentation, mmengine and mmcv with its compiled ops (see the README).
"""

from . import checkpoint  # noqa: F401  (registers the safe checkpoint loader)
from .backbone import PEBackbone
from .datasets import LoadCheckedAnnotations, LoadCheckedImage, PEScenesDataset, SegmentationDataError
from .heads import LinearProbeHead
from .lr_decay import PELayerDecayOptimizerConstructor

__all__ = ["LinearProbeHead", "LoadCheckedAnnotations", "LoadCheckedImage", "PEBackbone",
           "PELayerDecayOptimizerConstructor", "PEScenesDataset", "SegmentationDataError"]
