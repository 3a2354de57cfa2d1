# `make demo` and `make test` set everything up in .venv on first use (and again when setup.py,
# pyproject.toml or the C++/CUDA sources change); later runs go straight to the job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The independent deformable-attention implementation that tests and benchmarks compare with (also
# the [bench] extra). Built for the CPU only: it is a comparison target, not something we ship.
PEER_SPEC := torch-ms-deform-attn==0.1.1
STAMP := $(VENV)/.pe_dense-installed
CSRC := $(shell find pe_dense/ops/csrc -type f)
DEMO_OUT ?= outputs/demo
WEIGHTS ?=

# The CUDA kernels are compiled wherever nvcc exists, GPU or not, so a kernel that does not compile
# fails the build (and CI). FORCE_CUDA=0 skips them.
FORCE_CUDA ?= $(if $(shell command -v nvcc 2>/dev/null),1,0)
CUDA_HOME ?= $(wildcard /usr/local/cuda)
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0

.PHONY: install demo test clean

$(STAMP): setup.py pyproject.toml $(CSRC)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	FORCE_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation $(PEER_SPEC)
	FORCE_CUDA=$(FORCE_CUDA) CUDA_HOME=$(CUDA_HOME) TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" \
		$(BIN)/python -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pe-dense features sample:astronaut sample:chelsea sample:coffee \
		--model PE-Spatial-T16-512 $(if $(WEIGHTS),--weights $(WEIGHTS)) --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) build outputs pe_dense/_C*.so
