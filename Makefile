# `make demo` and `make test` set everything up in .venv on first use (and when setup.py or
# pyproject.toml change); later runs go straight to the job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.pe_dense-installed
DEMO_OUT ?= outputs/demo
WEIGHTS ?=

.PHONY: install demo test clean

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
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
