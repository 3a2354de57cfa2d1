"""Running trained mmseg models on images: segmenters (``pe-dense segment``: label PNGs, overlays with
a legend) and depth estimators (``pe-dense depth``, written by :mod:`.depth_files`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS
from PIL import Image, ImageDraw

from ... import configs
from ...atomic_files import atomic_output
from ...data.label_maps import write_label_png
from ...models import CheckpointError
from .checkpoint import load_from_local_safely
from .depth_heads import DepthHead

# The task of each mmseg model type pe_dense trains: segmenters and depth estimators.
MODEL_TASKS = {"EncoderDecoder": "segmentation", "DepthEstimator": "depth"}


def load_trained(config_file: str, weights: str, overrides: Optional[dict] = None, task: Optional[str] = None):
    """(the config, its model with the checkpoint's weights, the checkpoint's meta) for an mmseg config and
    a checkpoint trained from it; a CheckpointError where the weights do not fit the model. ``task``
    ("segmentation" or "depth"), when given, is checked first: a config of the other kind is named as such,
    not as weights that do not fit."""
    cfg = Config.fromfile(str(configs.resolve(config_file)))
    cfg.merge_from_dict({"model.backbone.weights": None, **(overrides or {})})  # the checkpoint has them
    init_default_scope(cfg.get("default_scope", "mmseg"))
    checkpoint = load_from_local_safely(str(weights))
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights} is not an mmseg checkpoint (it has no 'state_dict')")
    with warnings.catch_warnings():  # random weights (the checkpoint replaces them), mmseg's deprecation notes
        warnings.simplefilter("ignore")
        model = MODELS.build(cfg.model)
    is_depth = isinstance(model.decode_head, DepthHead)
    if task is not None and is_depth != (task == "depth"):
        raise ValueError(f"{config_file} is {'a' if is_depth else 'not a'} depth estimator: use "
                         f"`pe-dense {'depth' if is_depth else 'segment'}`")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} is not a trained model of {config_file}: {len(missing)} parameters are missing "
            f"(e.g. {', '.join(missing[:3])}), {len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return cfg, model, checkpoint.get("meta", {})


class Predictor:
    """An mmseg config with its trained weights, in eval mode, taking RGB uint8 arrays.

    Images go through the config's test pipeline (resizing, padding to the patch size) without its
    file loading, and predictions come back at the image's own size. ``task`` says which models a
    subclass runs: ``"segmentation"`` or ``"depth"`` (a depth head).
    """

    task = ""

    def __init__(self, config_file: str, weights: str, overrides: Optional[dict] = None, device: str = "cpu"):
        self.cfg, self.model, self.checkpoint_meta = load_trained(config_file, weights, overrides, self.task)
        self.model.to(device).eval()
        steps = [step for step in self.cfg.test_dataloader.dataset.pipeline if not step["type"].startswith("Load")]
        self.pipeline = Compose([dict(type="LoadImageFromNDArray"), *steps])

    @torch.no_grad()
    def predict(self, image: np.ndarray):
        """mmseg's prediction (a ``SegDataSample``) for one (H, W, 3) RGB uint8 image."""
        data = self.pipeline(dict(img=np.ascontiguousarray(image[..., ::-1])))  # mmcv pipelines work in BGR
        return self.model.test_step(pseudo_collate([data]))[0]


class Segmenter(Predictor):
    """A trained segmenter: (H, W) class indices per image. The class names and palette are the
    checkpoint's (saved by training) or else the config's test dataset's."""

    task = "segmentation"

    def __init__(self, config_file: str, weights: str, overrides: Optional[dict] = None, device: str = "cpu"):
        super().__init__(config_file, weights, overrides, device)
        dataset = self.cfg.test_dataloader.dataset
        meta = self.checkpoint_meta.get("dataset_meta") or {
            **DATASETS.get(dataset.type).METAINFO, **dataset.get("metainfo", {})}
        self.classes = list(meta["classes"])
        self.palette = np.array(meta["palette"], dtype=np.uint8).reshape(-1, 3)
        if len(self.classes) > 256:
            raise ValueError(f"{len(self.classes)} classes do not fit an indexed PNG (256 at most)")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W) class indices for one (H, W, 3) RGB uint8 image."""
        return self.predict(image).pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)


class DepthPredictor(Predictor):
    """A trained depth estimator: (H, W) depth in metres per image, within the head's
    [``min_depth``, ``max_depth``]; ``focal_length`` is the camera's in pixels when its training data
    declared one (a declared dataset's, kept in the checkpoint), else None."""

    task = "depth"

    def __init__(self, config_file: str, weights: str, overrides: Optional[dict] = None, device: str = "cpu"):
        super().__init__(config_file, weights, overrides, device)
        self.min_depth, self.max_depth = self.model.decode_head.min_depth, self.model.decode_head.max_depth
        self.focal_length = (self.checkpoint_meta.get("dataset_meta") or {}).get("focal_length")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W) float32 depth in metres for one (H, W, 3) RGB uint8 image."""
        return self.predict(image).pred_depth_map.data[0].float().cpu().numpy()


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, classes: Sequence[str], palette: np.ndarray,
                        alpha: float = 0.5) -> Image.Image:
    """The labels' colours blended over the image, with a legend of the classes present (largest first)."""
    blended = Image.fromarray((image * (1 - alpha) + palette[labels] * alpha).round().astype(np.uint8))
    ids, counts = np.unique(labels, return_counts=True)
    present = ids[np.argsort(-counts)]
    row = 16
    legend_width = 12 + 8 * max((len(classes[i]) for i in present), default=0) + 24
    canvas = Image.new("RGB", (blended.width + legend_width, max(blended.height, row * len(present) + 8)), "white")
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, i in enumerate(present):
        x, y = blended.width + 6, 4 + k * row
        draw.rectangle((x, y, x + 12, y + 12), fill=tuple(int(c) for c in palette[i]), outline="black")
        draw.text((x + 18, y), classes[i], fill="black")
    return canvas


def checked_images(sources, out: Path):
    """(source, (H, W, 3) uint8 RGB) per image, with progress, once every image has been read and
    ``out`` made: an unreadable image stops the run before anything is written."""
    from tqdm import tqdm

    for source in sources:  # a first pass, so that a bad image stops the run before any output
        source.load()
    out.mkdir(parents=True, exist_ok=True)
    for source in tqdm(sources, unit="image", disable=len(sources) < 2):
        yield source, np.asarray(source.load().convert("RGB"))


def segment_images(segmenter: Segmenter, sources, out: Path) -> dict:
    """Write ``<name>.png`` (indexed labels with the dataset's palette) and ``<name>_overlay.png`` per
    image to ``out``; returns the manifest's image entries. Every image is read before anything is
    written, so an unreadable one leaves ``out`` untouched."""
    entries = []
    for source, image in checked_images(sources, out):
        labels = segmenter(image)
        write_label_png(out / f"{source.name}.png", labels, segmenter.palette)
        with atomic_output(out / f"{source.name}_overlay.png") as tmp:
            overlay_with_legend(image, labels, segmenter.classes, segmenter.palette).save(tmp)
        ids, counts = np.unique(labels, return_counts=True)
        entries.append({"name": source.name, "height": image.shape[0], "width": image.shape[1],
                        "labels": f"{source.name}.png", "overlay": f"{source.name}_overlay.png",
                        "classes": {segmenter.classes[i]: round(float(c) / labels.size, 4)
                                    for i, c in sorted(zip(ids, counts), key=lambda p: -p[1])}})
    return {"images": entries, "classes": segmenter.classes, "palette": segmenter.palette.tolist()}
