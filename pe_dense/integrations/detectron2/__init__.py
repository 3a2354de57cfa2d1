"""PE in detectron2: the encoder as a ViTDet backbone and layer-wise lr decay for its parameters.

Importing this package needs detectron2 (install it from its git repository, see the README).
"""

from .backbone import PEBackbone
from .lr_decay import pe_lr_decay_rate

__all__ = ["PEBackbone", "pe_lr_decay_rate"]
