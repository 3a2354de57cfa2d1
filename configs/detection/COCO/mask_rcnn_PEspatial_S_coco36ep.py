"""PE-Spatial-S16-512 Mask R-CNN on COCO, 36 epochs: the B config (same depth, so the same ViTDet
settings) with the S encoder."""

from .mask_rcnn_PEspatial_B_coco36ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401 (the config)

model.backbone.net.model = "PE-Spatial-S16-512"
train.init_checkpoint = "pe://PE-Spatial-S16-512"
train.output_dir = "outputs/mask_rcnn_PEspatial_S_coco36ep"
