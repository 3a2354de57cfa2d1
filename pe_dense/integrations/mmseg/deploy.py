"""Trained mmseg models as plain torch modules, for ``pe-dense export --config``: RGB images in, the class map
and logits (segmenters) or depth in metres (depth estimators) out, with the config's normalisation, padding
and inference mode inside the module, so that a traced graph holds all of it (docs/export.md#whole-models).

The module imports no exporter: pe_dense.export traces and checks any such module.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .depth_heads import DepthHead
from .predict import MODEL_TASKS, load_trained


class WholeModel(nn.Module):
    """An mmseg segmentor as one function of images: (B, 3, H, W) float RGB in [0, 255] -> per task

    - segmentation: ``classes`` (B, H, W) int64 and ``logits`` (B, num_classes, H, W);
    - depth: ``depth`` (B, 1, H, W) in metres.

    As mmseg's test step runs it, after the test pipeline's loading and resizing: channels in the model's
    order, ``(x - mean) / std``, zero padding (``pad_val``) at the bottom and right to the data preprocessor's
    ``size_divisor``, whole-image inference, padding cut off.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        kind = type(model).__name__
        if kind not in MODEL_TASKS:
            raise ValueError(f"a {kind} cannot be exported whole: only mmseg segmenters (EncoderDecoder) and depth "
                             f"estimators (DepthEstimator)")
        self.task = MODEL_TASKS[kind]
        if self.task == "segmentation" and model.decode_head.out_channels == 1:
            raise ValueError("one-channel (binary) segmenters cannot be exported whole: only multi-class ones")
        if self.task == "depth" and not isinstance(model.decode_head, DepthHead):
            raise ValueError(f"a DepthEstimator with a {type(model.decode_head).__name__} cannot be exported whole: "
                             f"only pe_dense's depth heads (LinearBinsDepthHead, DPTDepthHead)")
        mode = model.test_cfg.get("mode", "whole")
        if mode != "whole":  # mmseg's sliding windows check their coverage on the data: not traceable
            raise ValueError(f"{mode} inference cannot be exported: export the whole-image mode "
                             f"(--set model.test_cfg.mode=whole), at the crop size for the same windows")
        pre = model.data_preprocessor
        test_cfg = pre.test_cfg or {}
        if test_cfg.get("size"):
            raise ValueError("the data preprocessor pads to a fixed size (test_cfg.size): not supported, use "
                             "size_divisor")
        self.model = model.eval()
        # mmcv loads BGR: the model sees RGB exactly where its preprocessor swaps the channels
        self.channels = [0, 1, 2] if pre.channel_conversion else [2, 1, 0]
        self.register_buffer("mean", pre.mean.clone() if pre._enable_normalize else torch.zeros(3, 1, 1))
        self.register_buffer("std", pre.std.clone() if pre._enable_normalize else torch.ones(3, 1, 1))
        self.size_divisor = test_cfg.get("size_divisor") or 1
        self.pad_val = float(pre.pad_val)
        self.output_names = ["classes", "logits"] if self.task == "segmentation" else ["depth"]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height, width = images.shape[-2:]
        x = (images[:, self.channels] - self.mean) / self.std
        d = self.size_divisor  # padded sizes written as whole multiples, so a traced graph keeps them symbolic
        x = F.pad(x, (0, (width + d - 1) // d * d - width, 0, (height + d - 1) // d * d - height), value=self.pad_val)
        metas = [dict(ori_shape=(height, width), img_shape=(height, width), pad_shape=tuple(x.shape[-2:]))]
        out = self.model.inference(x, metas)[:, :, :height, :width]
        if self.task == "depth":
            return (out,)
        return out.argmax(1), out

    def facts(self) -> dict:
        """What the manifest says of the input and the graph."""
        return {"task": self.task,
                "normalisation": {"channels": "RGB", "scale": "pixel (0 to 255)", "mean": self.mean.flatten().tolist(),
                                  "std": self.std.flatten().tolist(), "where": "inside the graph"},
                "padding": {"size_divisor": self.size_divisor, "value": self.pad_val,
                            "where": "inside the graph, cut off the outputs"}}


def test_resizing(cfg) -> list[dict]:
    """The test pipeline's resizing steps (done before the graph, on the image), as the config writes them."""
    return [dict(step) for step in cfg.test_dataloader.dataset.pipeline if "Resize" in step["type"]]


def load_whole_model(config_file: str, weights: str, overrides: Optional[dict] = None) -> tuple[WholeModel, dict]:
    """(the :class:`WholeModel` of an mmseg config and its trained weights, its facts for a manifest)."""
    from mmengine.config import Config

    from ... import configs

    path = configs.resolve(config_file)
    try:  # mmengine runs the file: a detectron2 LazyConfig, for one, fails in it
        kind = Config.fromfile(str(path)).model["type"]
    except Exception as e:
        kind = f"not an mmseg config ({type(e).__name__})"
    if kind not in MODEL_TASKS:  # before any weights are read
        raise ValueError(f"{config_file} is {kind if kind.startswith('not') else f'a {kind} config'}: whole-model "
                         f"export takes mmseg segmenters (EncoderDecoder) and depth estimators (DepthEstimator), and "
                         f"detectron2 detectors with --format torchscript")
    cfg, model, _ = load_trained(config_file, weights, overrides)
    whole = WholeModel(model)
    resize = test_resizing(cfg)
    return whole, {**whole.facts(), "resize": resize or None,
                   "resize_where": "before the graph, on the image (the config's test pipeline)" if resize else
                   "none: the graph takes images at their own size"}
