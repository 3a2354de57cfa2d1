"""PE-Spatial-S16-512 Mask R-CNN on your own COCO-format files: the COCO recipe's model (configs/detection/COCO/) with
the classes taken from the json, on a small-data schedule (configs/detection/common/custom_data.py).

    python tools/train_net.py --config-file configs/detection/custom/mask_rcnn_PEspatial_S_custom.py \
        custom_data.train_json=train.json custom_data.train_images=images/ \
        custom_data.val_json=val.json custom_data.val_images=images/
"""

from ..COCO.mask_rcnn_PEspatial_S_coco36ep import dataloader, model, optimizer, train  # noqa: F401 (the config)
from ..common.custom_data import custom_data, small_data_schedule  # noqa: F401 (the config)

lr_multiplier = small_data_schedule(train, dataloader, optimizer, "outputs/mask_rcnn_PEspatial_S_custom")
