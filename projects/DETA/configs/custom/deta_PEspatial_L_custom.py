"""DETA with PE-Spatial-L14-448 on your own COCO-format files (docs/custom_data.md): the COCO model and
optimiser (deta_PEspatial_L_coco_1024.py) with the classes taken from the json, on the same small-data
schedule as the Mask R-CNN templates, a starting point (batch 16, 5000 iterations with cosine decay).

    python tools/train_net.py --config-file projects/DETA/configs/custom/deta_PEspatial_L_custom.py \
        custom_data.train_json=train.json custom_data.train_images=images/ \
        custom_data.val_json=val.json custom_data.val_images=images/
"""

from pe_dense.integrations.detectron2.custom_data import small_data_schedule

from ..deta_PEspatial_L_coco_1024 import dataloader, model, optimizer, train  # noqa: F401 (the config)

custom_data = dict(train_json="", train_images="", val_json="", val_images="")  # set on the command line
lr_multiplier = small_data_schedule(train, dataloader, "outputs/deta_PEspatial_L_custom")
