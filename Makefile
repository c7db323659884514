# Two commands: `make run` and `make test`. Each sets up what it needs on a fresh machine and skips the
# installs when nothing changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# PyTorch's CPU build goes in first, pinned: an unpinned torch pulls a multi-GB CUDA build. Elsewhere, add
# PyTorch's CPU wheel index here, e.g. make TORCH_PIP_ARGS="--index-url <cpu index>".
TORCH_VERSION  ?= 2.13.0
TORCH_PIP_ARGS ?=

.PHONY: run test lint bench clean setup

run: $(STAMP)
	$(BIN)/sentinel up

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check ingest features models cluster actors serve_apps benchmarks tests
	$(BIN)/mypy ingest features models cluster actors serve_apps benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .sentinel .pytest_cache .mypy_cache .ruff_cache .hypothesis
