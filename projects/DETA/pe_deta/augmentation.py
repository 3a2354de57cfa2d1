"""A detectron2 augmentation that applies one of several augmentation lists, picked at random (DETR's
"either multi-scale resize, or resize-crop-resize")."""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T


class RandomChoice(T.Augmentation):
    """Apply one of ``choices`` (each a list of augmentations), chosen uniformly per image."""

    def __init__(self, choices):
        super().__init__()
        if not choices:
            raise ValueError("RandomChoice needs at least one list of augmentations")
        self.choices = [T.AugmentationList(list(c)) for c in choices]

    def __call__(self, aug_input) -> T.Transform:
        return self.choices[np.random.randint(len(self.choices))](aug_input)

    def __repr__(self) -> str:
        return f"RandomChoice({self.choices})"
