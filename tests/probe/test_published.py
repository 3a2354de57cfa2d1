"""The published numbers the probe's table shows are the ones the docs state (docs/results.md), and every
model is compared with the PE-Spatial model of its size."""

import re
from pathlib import Path

import pytest

from pe_dense.models import list_models
from pe_dense.probe.published import PUBLISHED, published, reference_model

ROOT = Path(__file__).resolve().parents[2]


def test_the_table_is_the_docs_table():
    rows = re.findall(r"^\| (PE-Spatial-\S+) \| ([\d.]+) \| ([\d.]+) \|$", (ROOT / "docs/results.md").read_text(),
                      re.MULTILINE)
    assert {model: {"ade20k": float(ade), "davis": float(davis)} for model, ade, davis in rows} == PUBLISHED


def test_the_linear_probe_configs_and_the_segmentation_guide_quote_the_same_numbers():
    guide = re.search(r"published: T ([\d.]+), S ([\d.]+), B ([\d.]+), L ([\d.]+), G ([\d.]+) mIoU",
                      (ROOT / "docs/segmentation.md").read_text())
    assert guide, "docs/segmentation.md no longer quotes the published linear-probe numbers"
    for size, quoted in zip("TSBLG", guide.groups()):
        model = next(name for name in PUBLISHED if f"-{size}1" in name)
        config = (ROOT / f"configs/segmentation/ade20k/linear_PEspatial_{size}_ade20k.py").read_text()
        assert float(quoted) == float(re.search(r"reports ([\d.]+) mIoU", config)[1]) == PUBLISHED[model]["ade20k"]


@pytest.mark.parametrize("model", list_models())
def test_every_model_is_compared_with_the_spatial_model_of_its_size(model):
    reference = reference_model(model)
    assert reference.startswith("PE-Spatial-") and reference.split("-")[2][0] == model.split("-")[2][0]
    assert published(model, "ade20k") == PUBLISHED[reference]["ade20k"]
    assert published(model, "nyu") is None  # PE-Spatial's depth results are not public
