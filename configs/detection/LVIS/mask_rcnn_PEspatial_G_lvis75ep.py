"""PE-Spatial-G Mask R-CNN on LVIS v1, 75 epochs: the published recipe (docs/detection.md#vitdet-mask-r-cnn) with
ViTDet's LVIS settings (repeat-factor sampling, federated sigmoid loss, 300 detections per image).

Evaluate the released detector with
--eval-only train.init_checkpoint=hf://facebook/PE-Detection:mask_rcnn_PEspatial_G_lvis75ep.pth
"""

from detectron2.config import LazyCall as L
from detectron2.data.detection_utils import get_fed_loss_cls_weights
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.evaluation.lvis_evaluation import LVISEvaluator

from ..common.coco_loader_lsj import dataloader
from ..common.mask_rcnn_pe import model
from ..common.schedule import adamw, epochs, step_schedule, train

model.roi_heads.num_classes = 1203
model.roi_heads.box_predictor.test_score_thresh = 0.02
model.roi_heads.box_predictor.test_topk_per_image = 300
model.roi_heads.box_predictor.use_sigmoid_ce = True
model.roi_heads.box_predictor.use_fed_loss = True
model.roi_heads.box_predictor.get_fed_loss_cls_weights = lambda: get_fed_loss_cls_weights(
    dataloader.train.dataset.names, 0.5)

dataloader.train.dataset.names = "lvis_v1_train"
dataloader.train.sampler = L(RepeatFactorTrainingSampler)(
    repeat_factors=L(RepeatFactorTrainingSampler.repeat_factors_from_category_frequency)(
        dataset_dicts="${dataloader.train.dataset}", repeat_thresh=0.001)
)
dataloader.test.dataset.names = "lvis_v1_val"
dataloader.evaluator = L(LVISEvaluator)(
    dataset_name="${..test.dataset.names}", max_dets_per_image=300, output_dir="${train.output_dir}")
dataloader.train.total_batch_size = 64

train.init_checkpoint = "pe://PE-Spatial-G14-448"
train.output_dir = "outputs/mask_rcnn_PEspatial_G_lvis75ep"
train.eval_period = 30000
train.max_iter, _milestones = epochs(75)
lr_multiplier = step_schedule(train.max_iter, _milestones)
optimizer = adamw(lr=5e-5, lr_decay_rate=0.9)
