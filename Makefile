# `make demo` and `make test` set everything up in .venv on first use (and again when setup.py,
# pyproject.toml or the C++/CUDA sources change); later runs go straight to the job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The independent deformable-attention implementation that tests and benchmarks compare with (also
# the [bench] extra). Built for the CPU only: it is a comparison target, not something we ship.
PEER_SPEC := torch-ms-deform-attn==0.1.1
# mmsegmentation's stack (the [mmseg] extra lists what it needs besides these three). mmcv has no wheel for
# this Python and torch: it is built from its PyPI source release once per machine and torch version into
# WHEEL_CACHE, with C++20 (torch's headers need it) where its setup.py asks for C++17, and reused after that.
# mmcv and mmengine ask for opencv-python, which would share cv2/ with pe_dense's opencv-python-headless and
# break it, so they are installed without their dependencies (pip then warns that opencv-python is absent).
MMCV_VERSION := 2.1.0
MMSEG_SPEC := mmengine==0.10.7 mmsegmentation==1.2.2
WHEEL_CACHE ?= $(HOME)/.cache/pe_dense/wheels/$(subst ==,-,$(firstword $(TORCH_SPEC)))
MMCV_WHEEL = $(firstword $(wildcard $(WHEEL_CACHE)/mmcv-$(MMCV_VERSION)-*.whl))
STAMP := $(VENV)/.pe_dense-installed
CSRC := $(shell find pe_dense/ops/csrc -type f)
DEMO_OUT ?= outputs/demo
DEMO_CONFIG := configs/detection/shapes/mask_rcnn_PEspatial_T_shapes.py
DEMO_IMAGES := $(foreach i,0 1 2 3,datasets/shapes/val/00000$(i).png)
D2_STAMP := $(VENV)/.detectron2-installed
WEIGHTS ?=
SEG_DEMO_OUT ?= outputs/seg-demo
SEG_DEMO_CONFIG := configs/segmentation/scenes/upernet_PEspatial_T_scenes.py
SEG_DEMO_IMAGES := $(foreach i,0 1 2 3,datasets/pe_scenes/images/validation/scene_00000$(i).jpg)
DEPTH_DEMO_OUT ?= outputs/depth-demo
DEPTH_DEMO_CONFIG := configs/depth/scenes/dpt_PEspatial_T_scenes.py
DEPTH_DEMO_IMAGES := $(foreach i,0 1 2 3,datasets/pe_depth_scenes/images/test/scene_00000$(i).jpg)

# The CUDA kernels are compiled wherever nvcc exists, GPU or not, so a kernel that does not compile
# fails the build (and CI). FORCE_CUDA=0 skips them.
FORCE_CUDA ?= $(if $(shell command -v nvcc 2>/dev/null),1,0)
CUDA_HOME ?= $(wildcard /usr/local/cuda)
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0

.PHONY: install mmcv-wheel demo detection-demo seg-demo depth-demo align-demo test clean

$(STAMP): setup.py pyproject.toml $(CSRC)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<81" wheel ninja
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(MAKE) --no-print-directory mmcv-wheel
	$(BIN)/python -m pip install -q --no-deps $(WHEEL_CACHE)/mmcv-$(MMCV_VERSION)-*.whl $(MMSEG_SPEC)
	FORCE_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation $(PEER_SPEC)
	FORCE_CUDA=$(FORCE_CUDA) CUDA_HOME=$(CUDA_HOME) TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" SAM2_BUILD_CUDA=0 \
		$(BIN)/python -m pip install -q --no-build-isolation -e ".[dev,mmseg]"
	touch $@

install: $(STAMP)

# mmcv with its compiled ops, built against the venv's torch (about 10 minutes on 2 cores, once per machine).
mmcv-wheel:
	@if [ -z "$(MMCV_WHEEL)" ]; then \
		set -e; src=$$(mktemp -d); \
		echo "building mmcv $(MMCV_VERSION) with its ops into $(WHEEL_CACHE) (once per machine, ~10 min on 2 cores)"; \
		$(BIN)/python -m pip download -q --no-deps --no-binary :all: --no-build-isolation mmcv==$(MMCV_VERSION) -d $$src; \
		tar xzf $$src/mmcv-$(MMCV_VERSION).tar.gz -C $$src; \
		sed -i 's/-std=c++17/-std=c++20/g' $$src/mmcv-$(MMCV_VERSION)/setup.py; \
		MMCV_WITH_OPS=1 MAX_JOBS=$$(nproc) $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation \
			-w $(WHEEL_CACHE) $$src/mmcv-$(MMCV_VERSION); \
		rm -rf $$src; \
	fi

# detectron2 is not on PyPI: it comes from its git repository (the [detectron2] extra) unless it is
# already importable (e.g. built from a local clone with pip install --no-build-isolation CLONE).
$(D2_STAMP): $(STAMP)
	$(BIN)/python -c "import detectron2" 2>/dev/null || \
		$(BIN)/python -m pip install -q --no-build-isolation ".[detectron2]"
	$(BIN)/python -m pip install -q shapely
	touch $@

# The main jobs on built-in data, one stage after another: segmentation, depth, detection.
demo: seg-demo depth-demo detection-demo

# Detection: train the tiny PE Mask R-CNN on the built-in shapes dataset (generated on first use
# under datasets/shapes), evaluate it on the val split, and draw its predictions on 4 val images.
detection-demo: $(D2_STAMP)
	$(BIN)/python tools/train_net.py --config-file $(DEMO_CONFIG) train.output_dir=$(DEMO_OUT) \
		$(if $(WEIGHTS),train.init_checkpoint=$(WEIGHTS))
	$(BIN)/pe-dense detect $(DEMO_IMAGES) --config $(DEMO_CONFIG) --weights $(DEMO_OUT)/model_final.pth \
		--out $(DEMO_OUT)/pictures
	@$(BIN)/python -c 'import json, sys; r = json.load(open(sys.argv[1])); \
		print("shapes_val after training: box AP %.1f, mask AP %.1f" % (r["bbox"]["AP"], r["segm"]["AP"]))' \
		$(DEMO_OUT)/evaluation.json

# Segmentation: a tiny PE UperNet trained on the built-in scenes (generated on first use under
# datasets/pe_scenes), evaluated on their validation split (mIoU), and run on 4 of its images.
seg-demo: $(STAMP)
	$(BIN)/python tools/train_seg.py --config $(SEG_DEMO_CONFIG) --work-dir $(SEG_DEMO_OUT) \
		$(if $(WEIGHTS),--cfg-options model.backbone.weights=$(WEIGHTS))
	$(BIN)/pe-dense segment $(SEG_DEMO_IMAGES) --config $(SEG_DEMO_CONFIG) --force \
		--weights $$(cat $(SEG_DEMO_OUT)/last_checkpoint) --out $(SEG_DEMO_OUT)/pictures
	@$(BIN)/python -c 'import json, sys; r = json.load(open(sys.argv[1])); \
		print("pe_scenes validation after training: mIoU %.1f, aAcc %.1f" % (r["mIoU"], r["aAcc"]))' \
		$(SEG_DEMO_OUT)/evaluation.json

# Depth: a tiny PE DPT trained on the built-in depth scenes (generated on first use under
# datasets/pe_depth_scenes), evaluated on their test split against predicting the mean depth, and run on
# 4 of its images (depth PNG/.npy, pictures with a colour bar, point clouds).
depth-demo: $(STAMP)
	$(BIN)/python tools/train_seg.py --config $(DEPTH_DEMO_CONFIG) --work-dir $(DEPTH_DEMO_OUT) \
		$(if $(WEIGHTS),--cfg-options model.backbone.weights=$(WEIGHTS))
	$(BIN)/pe-dense depth $(DEPTH_DEMO_IMAGES) --config $(DEPTH_DEMO_CONFIG) --force --ply \
		--weights $$(cat $(DEPTH_DEMO_OUT)/last_checkpoint) --out $(DEPTH_DEMO_OUT)/pictures
	@$(BIN)/python -c 'import json, sys; from pe_dense.data.depth_scenes import mean_depth_baseline; \
		r = json.load(open(sys.argv[1])); b = mean_depth_baseline("datasets/pe_depth_scenes"); \
		print("pe_depth_scenes test after training: d1 %.3f, RMSE %.3f m, abs_rel %.3f (mean depth everywhere: " \
		      "d1 %.3f, RMSE %.3f m)" % (r["d1"], r["rmse"], r["abs_rel"], b["d1"], b["rmse"]))' \
		$(DEPTH_DEMO_OUT)/evaluation.json

# Spatial alignment on the built-in shapes images with tiny random teachers (CPU, ~1.5 min); run
# again, it resumes (a finished run only re-exports the student).
align-demo: $(STAMP)
	$(BIN)/python tools/align_net.py --config configs/align/tiny.py --resume

test: $(STAMP)
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) build outputs pe_dense/_C*.so
