"""Exactly one OpenCV distribution is installed, and it works without a display.

mmcv and mmengine ask for opencv-python while pe_dense uses opencv-python-headless; both unpack into
cv2/, so having the two installed breaks whichever was installed first.
"""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

OPENCV_DISTRIBUTIONS = {"opencv-python", "opencv-python-headless", "opencv-contrib-python",
                        "opencv-contrib-python-headless"}


def test_exactly_one_opencv_distribution_provides_cv2():
    installed = sorted({d.metadata["Name"].lower() for d in metadata.distributions()} & OPENCV_DISTRIBUTIONS)
    assert installed == ["opencv-python-headless"]
    import cv2

    owned = {Path(f.locate()).resolve() for f in metadata.files("opencv-python-headless")}
    assert Path(cv2.__file__).resolve() in owned


def test_cv2_works_headless():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    code = ("import cv2, numpy as np; a = np.arange(48, dtype=np.uint8).reshape(4, 4, 3); "
            "ok, png = cv2.imencode('.png', a); assert ok; "
            "assert (cv2.imdecode(png, cv2.IMREAD_UNCHANGED) == a).all(); print(cv2.__version__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert np.all([part.isdigit() for part in result.stdout.strip().split(".")[:2]])
