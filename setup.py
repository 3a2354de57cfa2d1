"""Build and install pe_dense.

The C++/CUDA extension ``pe_dense._C`` (deformable attention) is compiled from pe_dense/ops/csrc with
torch's cpp_extension: the CPU kernels always, the CUDA kernels when a CUDA toolkit and a CUDA build
of torch are present, or when FORCE_CUDA=1 (to compile them on a machine without a GPU). Install
with ``pip install --no-build-isolation -e .`` so the extension builds against the installed torch.
"""

import glob
import os
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup

DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"


def ops_extensions():
    """The extension modules and build command, or nothing when there are no kernel sources."""
    cpp = sorted(glob.glob("pe_dense/ops/csrc/**/*.cpp", recursive=True))
    if not cpp:
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cuda = sorted(glob.glob("pe_dense/ops/csrc/**/*.cu", recursive=True))
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = bool(cuda) and CUDA_HOME is not None and (force_cuda or torch.cuda.is_available())
    if force_cuda and not with_cuda:
        raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit (CUDA_HOME) or no .cu sources were found")
    # -fopenmp: torch's at::parallel_for is OpenMP-based and runs serially in code compiled without it.
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp"]
    if with_cuda:
        extension = CUDAExtension(
            "pe_dense._C", cpp + cuda, define_macros=[("WITH_CUDA", None)], extra_link_args=["-fopenmp"],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20"]},
        )
    else:
        extension = CppExtension("pe_dense._C", cpp, extra_compile_args={"cxx": cxx_flags},
                                 extra_link_args=["-fopenmp"])
    return [extension], {"build_ext": BuildExtension.with_options(use_ninja=True)}


def shipped_configs() -> list[str]:
    """Link each folder of configs/, and projects/DETA/configs as DETA, into pe_dense/configs (copy them where
    links cannot be made), as detectron2 links its model zoo's configs into its package; the package data are
    the files under them. From an unpacked source release the folders are there already."""
    package = Path("pe_dense/configs")
    sources = {p.name: p for p in sorted(Path("configs").glob("*")) if p.is_dir()}
    if Path("projects/DETA/configs").is_dir():
        sources["DETA"] = Path("projects/DETA/configs")
    for name, source in sources.items():
        link = package / name
        if link.is_symlink():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        try:
            link.symlink_to(os.path.relpath(source, package), target_is_directory=True)
        except OSError:
            shutil.copytree(source, link)
    return [os.path.relpath(path, package) for path in glob.glob(f"{package}/*/**/*.py", recursive=True)]


ext_modules, cmdclass = ops_extensions()

setup(
    name="pe_dense",
    version=re.search(r'__version__ = "([^"]+)"', open("pe_dense/__init__.py").read()).group(1),
    description="Dense prediction toolkit on Meta's Perception Encoder (PE-Spatial, PE-Core, PE-Lang)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # projects/DETA's package installs beside pe_dense so its configs and `pe-dense detect` find it.
    packages=find_packages(include=["pe_dense", "pe_dense.*"]) + ["pe_deta"],
    package_dir={"pe_deta": "projects/DETA/pe_deta"},
    package_data={"pe_dense": ["ops/csrc/**/*"], "pe_dense.configs": shipped_configs()},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=[
        "torch>=2.1",
        "numpy",
        "pillow",
        "safetensors",
        "huggingface_hub",
        "tqdm",
        "scikit-image",  # ships the offline sample images
        "opencv-python-headless",  # DAVIS boundary measure; the only OpenCV distribution to install
        "av",  # video decoding/encoding (PyAV)
        "matplotlib",  # colour maps and figures of pe_dense.viz
        "scipy",  # leading eigenvectors only, for PCA pictures
        "pycocotools",  # COCO masks of the built-in shapes dataset
    ],
    extras_require={
        # shapely: detectron2 needs it to crop polygon masks (large-scale jitter) but does not declare it
        # sam2 compiles against the installed torch (--no-build-isolation); SAM2_BUILD_CUDA=0 skips its
        # optional CUDA post-processing kernel, which alignment does not use
        "dev": ["pytest", "pytest-xdist", "hypothesis", "ruff==0.17.6", "timm>=1.0.20", "segment-anything", "sam2",
                "tensorboard", "nbclient", "nbformat", "ipykernel", "shapely", "onnx", "onnxscript", "onnxruntime"],
        # timm: models as encoders (--encoder timm:NAME); DINOv3 arrived in timm 1.0.20
        "timm": ["timm>=1.0.20"],
        # needs --no-build-isolation (it compiles against the installed torch)
        "bench": ["torch-ms-deform-attn==0.1.1"],
        "detectron2": [f"detectron2 @ git+https://github.com/facebookresearch/detectron2.git@{DETECTRON2_COMMIT}",
                       "shapely"],
        # What mmcv 2.1.0 (with its ops), mmengine 0.10.7 and mmsegmentation 1.2.2 need besides OpenCV. The three
        # are installed with --no-deps (see the Makefile and README): they ask for opencv-python, which breaks
        # the opencv-python-headless that pe_dense uses when both are installed. kornia: depth (gradient loss,
        # point clouds).
        "mmseg": ["addict", "yapf", "rich", "termcolor", "pyyaml", "prettytable", "ftfy", "regex", "kornia"],
        "sam": ["segment-anything", "sam2"],
        "align": ["segment-anything", "sam2", "tensorboard"],  # needs SAM2_BUILD_CUDA=0 --no-build-isolation
        "notebooks": ["jupyterlab"],
        # pe-dense export: torch's ONNX exporter needs onnx and onnxscript; the export is checked in onnxruntime
        "export": ["onnx", "onnxscript", "onnxruntime"],
    },
    entry_points={"console_scripts": ["pe-dense=pe_dense.cli:main"]},
)
