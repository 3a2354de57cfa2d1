"""PE-Core-G Mask R-CNN on LVIS v1, 75 epochs (the released PEcore_G recipe: no layerscale, otherwise as Spatial-G).

Evaluate the released detector with
--eval-only train.init_checkpoint=hf://facebook/PE-Detection:mask_rcnn_PEcore_G_lvis75ep.pth
"""

from pe_dense.models import stage_end_blocks

from ..common.mask_rcnn_pe import pe_pyramid
from .mask_rcnn_PEspatial_G_lvis75ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401 (the config)

model.backbone = pe_pyramid("PE-Core-G14-448", global_blocks=stage_end_blocks("PE-Core-G14-448"), drop_path_rate=0.5)
train.init_checkpoint = "pe://PE-Core-G14-448"
train.output_dir = "outputs/mask_rcnn_PEcore_G_lvis75ep"
