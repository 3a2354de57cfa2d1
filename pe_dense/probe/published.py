"""The PE paper's frozen-feature numbers for PE-Spatial (docs/results.md#published-results), which the
probe's table sets beside each measurement. The docs state them for readers; this table is what the code
reads, and a test keeps the two equal. PE-Spatial's depth results are not public: there is none to show. A
timm model's row shows none either: its authors' numbers come from their own protocols, and
docs/comparison.md sets them beside ours with the differences."""

from __future__ import annotations

import re
from typing import Optional

from ..models import get_config, is_timm_name

# model -> task -> published value: ADE20k linear-probe mIoU and DAVIS 2017 J&F, both in percent.
PUBLISHED = {
    "PE-Spatial-G14-448": {"ade20k": 49.3, "davis": 61.5},
    "PE-Spatial-L14-448": {"ade20k": 48.1, "davis": 60.6},
    "PE-Spatial-B16-512": {"ade20k": 44.4, "davis": 58.9},
    "PE-Spatial-S16-512": {"ade20k": 37.5, "davis": 57.5},
    "PE-Spatial-T16-512": {"ade20k": 27.6, "davis": 55.0},
}
_SIZE = re.compile(r"-([TSBLG])\d+-")


def model_size(model: str) -> str:
    """The size letter (T, S, B, L or G) of a released model's name, which picks the probe configs."""
    get_config(model)  # an unknown name gets its error and suggestions here
    return _SIZE.search(model)[1]


def reference_model(model: str) -> Optional[str]:
    """The PE-Spatial model of ``model``'s size: the published numbers a probe of ``model`` is compared with
    (None for a timm model)."""
    if is_timm_name(model):
        return None
    size = model_size(model)
    return next(name for name in PUBLISHED if _SIZE.search(name)[1] == size)


def published(model: str, task: str) -> Optional[float]:
    """The published number of ``task`` for ``model``'s size, or None (depth: never published; timm models)."""
    reference = reference_model(model)
    return None if reference is None else PUBLISHED[reference].get(task)
