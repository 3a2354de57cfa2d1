"""distill_spatial_G_to_L.py with a PE-Core-B16 student at 512 px (32 x 32 tokens, as G at 448)."""

import dataclasses
import runpy
from pathlib import Path

base = runpy.run_path(str(Path(__file__).with_name("distill_spatial_G_to_L.py")))["config"]
config = dataclasses.replace(
    base,
    student=dataclasses.replace(base.student, model="PE-Core-B16-224", image_size=512),
    train=dataclasses.replace(base.train, output_dir="output/distill_spatial_G_to_B"),
)
