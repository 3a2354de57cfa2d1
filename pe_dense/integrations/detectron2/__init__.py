"""PE in detectron2: the encoder as a ViTDet backbone, layer-wise lr decay, a checkpointer for PE
weights, and the built-in shapes dataset (registered on import as ``shapes_train``/``shapes_val``).

Importing this package needs detectron2 (install it from its git repository: docs/install.md#detectron2).
"""

from ...models.lr_decay import pe_backbone_blocks, pe_lr_decay_rate
from .backbone import PEBackbone
from .checkpoint import PEDetectionCheckpointer, find_pe_encoder, fit_pe_weights
from .datasets import register_shapes, shapes_batch
from .lr_decay import pe_optimizer_params

register_shapes()

__all__ = ["PEBackbone", "PEDetectionCheckpointer", "find_pe_encoder", "fit_pe_weights", "pe_backbone_blocks",
           "pe_lr_decay_rate", "pe_optimizer_params", "register_shapes", "shapes_batch"]
