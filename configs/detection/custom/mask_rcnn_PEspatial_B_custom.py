"""PE-Spatial-B16-512 Mask R-CNN on your own COCO-format files (docs/custom_data.md): the COCO recipe's model
(configs/detection/COCO/) with the classes taken from the json, on a small-data schedule that is a starting
point (batch 16, 5000 iterations with cosine decay, the COCO recipe's lr).

    python tools/train_net.py --config-file configs/detection/custom/mask_rcnn_PEspatial_B_custom.py \
        custom_data.train_json=train.json custom_data.train_images=images/ \
        custom_data.val_json=val.json custom_data.val_images=images/
"""

from pe_dense.integrations.detectron2.custom_data import small_data_schedule

from ..COCO.mask_rcnn_PEspatial_B_coco36ep import dataloader, model, optimizer, train  # noqa: F401 (the config)

custom_data = dict(train_json="", train_images="", val_json="", val_images="")  # set on the command line
lr_multiplier = small_data_schedule(train, dataloader, "outputs/mask_rcnn_PEspatial_B_custom")
