# `make demo` and `make test` set up .venv on first use (and again when setup.py, pyproject.toml or the C++/CUDA
# sources change), in stages: the core (torch, pe_dense and its kernels: a few minutes), then mmsegmentation's
# stack (mmcv built from source once per machine: ~10 minutes on 2 cores), then the test tools. `make demo`
# needs the core only: its segmentation and depth stages build the mmseg stack when they reach it, after the
# features and tracking stages have shown their results.
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
CORE := $(VENV)/.pe_dense-core
MMSEG := $(VENV)/.pe_dense-mmseg
STAMP := $(VENV)/.pe_dense-installed
CSRC := $(shell find pe_dense/ops/csrc -type f)
# make demo [STAGES=features,tracking,segmentation,depth,detection] [WEIGHTS=PE-Spatial-T16-512.pt] [FULL=1]
STAGES ?=
WEIGHTS ?=
FULL ?=
DEMO := $(BIN)/python tools/demo.py $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(FULL),--full)

# The CUDA kernels are compiled wherever nvcc exists, GPU or not, so a kernel that does not compile
# fails the build (and CI). FORCE_CUDA=0 skips them.
FORCE_CUDA ?= $(if $(shell command -v nvcc 2>/dev/null),1,0)
CUDA_HOME ?= $(wildcard /usr/local/cuda)
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
PE_DENSE := FORCE_CUDA=$(FORCE_CUDA) CUDA_HOME=$(CUDA_HOME) TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" \
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation -e

.PHONY: install mmseg mmcv-wheel lint demo features-demo tracking-demo detection-demo seg-demo depth-demo align-demo \
	test test-slow wheel-check clean

$(CORE): setup.py pyproject.toml $(CSRC)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<81" wheel ninja
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(PE_DENSE) .
	touch $@

$(MMSEG): $(CORE)
	$(MAKE) --no-print-directory mmcv-wheel
	$(BIN)/python -m pip install -q --no-deps $(WHEEL_CACHE)/mmcv-$(MMCV_VERSION)-*.whl $(MMSEG_SPEC)
	$(PE_DENSE) ".[mmseg]"
	touch $@

$(STAMP): $(MMSEG)
	FORCE_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation $(PEER_SPEC)
	$(PE_DENSE) ".[dev,mmseg]"
	touch $@

install: $(STAMP)

# mmsegmentation's stack alone (the demo's segmentation and depth stages run this when they need it).
mmseg: $(MMSEG)

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

# The main jobs on built-in data, stage by stage (tools/demo.py), ending with a table of what ran, its
# headline figure and where its pictures are. detectron2 is not on PyPI: the detection stage installs it from
# its git repository (the [detectron2] extra) when it is missing, and is skipped, saying how to install it,
# where that repository is out of reach.
demo: $(CORE)
	$(DEMO) $(if $(STAGES),--stages $(STAGES))

features-demo: $(CORE)
	$(DEMO) --stages features

tracking-demo: $(CORE)
	$(DEMO) --stages tracking

detection-demo: $(CORE)
	$(DEMO) --stages detection

seg-demo: $(CORE)
	$(DEMO) --stages segmentation

depth-demo: $(CORE)
	$(DEMO) --stages depth

# Spatial alignment on the built-in shapes images with tiny random teachers (CPU, ~1.5 min); run
# again, it resumes (a finished run only re-exports the student).
align-demo: $(STAMP)
	$(BIN)/python tools/align_net.py --config configs/align/tiny.py --resume

# ruff with the repository's settings (pyproject.toml); CI runs it before the tests
lint: $(STAMP)
	$(BIN)/ruff check .

# The tests that check behaviour and equivalence, on two workers (pytest-xdist, one torch thread each; 1.4x
# faster than one process on 2 cores), with the slowest tests' durations; docs/testing.md has the tiers.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --durations=20

# The slow tier: learning runs of minutes that reach a score from random weights, the demo's stages end to end.
test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -m slow --durations=0

# The wheel, installed outside the checkout, runs the commands (CI runs it after the tests).
wheel-check: $(STAMP)
	.ci/wheel_smoke

clean:
	rm -rf $(VENV) build outputs pe_dense/_C*.so
