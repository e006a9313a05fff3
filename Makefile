# Two entry points: `make run` (the embedded default, offline, ends in `dvc repro`) and `make test`.
# `make smoke-full`: the full-scale path on tiny random models of the real architectures (docs/full-scale.md;
# the harness is tests/e2e/full_path, not part of the installed package).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DVC_NO_ANALYTICS := 1
export PREFECT_HOME := $(CURDIR)/.prefect
SMOKE_OUT ?= runs/smoke-full

.PHONY: setup run test bench smoke-full clean-data plots-page

$(VENV)/.installed: requirements.lock requirements-nodeps.lock pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -m cim.plots_page .dvc/offline.html
	touch $@

setup: $(VENV)/.installed

run: setup
	CIM_PIPELINE_ID=$${CIM_PIPELINE_ID:-repro-$$(date +%Y%m%d-%H%M%S)} dvc repro

# two xdist workers: a module runs whole on one worker, the longest chains first (tests/conftest.py);
# `make test PYTEST_XDIST=` runs the suite in one process
PYTEST_XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder

test: setup
	$(BIN)/pytest -q $(PYTEST_XDIST) --durations=20

bench: setup
	$(BIN)/python perf/reward_throughput.py
	$(BIN)/python perf/index_throughput.py

smoke-full: setup
	PYTHONPATH=$(CURDIR)/tests$${PYTHONPATH:+:$$PYTHONPATH} $(BIN)/python -m e2e.full_path --out $(SMOKE_OUT)

plots-page: setup   # .dvc/offline.html: the page `dvc plots show` fills, Vega inlined (renders offline)
	$(BIN)/python -m cim.plots_page .dvc/offline.html

clean-data:
	rm -rf data/world data/index reports
