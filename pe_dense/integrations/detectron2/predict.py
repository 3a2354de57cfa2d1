"""Running a trained detector on images: annotated pictures and COCO-format results (``pe-dense detect``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image

from ... import configs
from ...atomic_files import write_json
from ...models import CheckpointError
from .checkpoint import PEDetectionCheckpointer
from .custom_data import custom_metadata


class Detector:
    """A LazyConfig detector with its weights, in eval mode, taking RGB uint8 arrays.

    Images are resized by the config's test augmentations and converted to the model's input format,
    as detectron2's test loader would; predictions come back at the image's own size.
    """

    def __init__(self, config_file: str, weights: str, overrides: Sequence[str] = (), device: str = "cpu"):
        cfg = LazyConfig.apply_overrides(LazyConfig.load(str(configs.resolve(config_file))), list(overrides))
        absent = [key for key in ("model", "dataloader") if key not in cfg]
        if absent:
            raise ValueError(f"{config_file} is not a detector config: it defines no {' and no '.join(absent)}")
        self.model = instantiate(cfg.model).to(device).eval()
        missing = PEDetectionCheckpointer(self.model).load_model_weights(weights)
        if missing:
            raise CheckpointError(f"{weights} is not a trained detector for {config_file}: {len(missing)} "
                                  f"parameters are missing (e.g. {', '.join(missing[:3])})")
        self.augmentations = T.AugmentationList([instantiate(a) for a in cfg.dataloader.test.mapper.augmentations])
        self.input_format = cfg.model.input_format
        custom_metadata(cfg)
        self.metadata = MetadataCatalog.get(cfg.dataloader.test.dataset.names)

    @torch.no_grad()
    def __call__(self, image: np.ndarray):
        """detectron2 ``Instances`` for one (H, W, 3) RGB uint8 image, on the CPU."""
        height, width = image.shape[:2]
        pixels = image if self.input_format == "RGB" else image[..., ::-1]
        pixels = T.AugInput(np.ascontiguousarray(pixels))
        self.augmentations(pixels)
        tensor = torch.as_tensor(pixels.image.transpose(2, 0, 1).copy())
        return self.model([{"image": tensor, "height": height, "width": width}])[0]["instances"].to("cpu")

    def coco_results(self, instances, image_id: int) -> list[dict]:
        """Predictions in the COCO results format, with the dataset's own category ids."""
        results = instances_to_coco_json(instances, image_id)
        to_dataset = {v: k for k, v in getattr(self.metadata, "thing_dataset_id_to_contiguous_id", {}).items()}
        for result in results:
            result["category_id"] = to_dataset.get(result["category_id"], result["category_id"])
        return results


def detect_images(detector: Detector, sources, out: Path, score_threshold: float = 0.5) -> dict:
    """Write ``<name>.png`` (predictions above ``score_threshold`` drawn on the image) per image and
    ``detections.json`` (all predictions, COCO results format) to ``out``; returns the manifest."""
    from ...viz.figures import save_picture

    out.mkdir(parents=True, exist_ok=True)
    images, results = [], []
    for image_id, source in enumerate(sources, start=1):
        image = np.asarray(source.load().convert("RGB"))
        instances = detector(image)
        results += detector.coco_results(instances, image_id)
        shown = instances[instances.scores >= score_threshold]
        drawing = Visualizer(image, detector.metadata, instance_mode=ColorMode.SEGMENTATION)
        drawn = Image.fromarray(drawing.draw_instance_predictions(shown).get_image())
        picture = save_picture(drawn, out / f"{source.name}.png")
        images.append({"id": image_id, "name": source.name, "height": image.shape[0], "width": image.shape[1],
                       "picture": picture.name, "detections": len(instances), "shown": len(shown)})
    write_json(out / "detections.json", results, indent=None)
    return {"images": images, "score_threshold": score_threshold,
            "classes": list(getattr(detector.metadata, "thing_classes", []))}
