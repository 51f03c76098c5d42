# gppf_dist — `make help` lists the targets. `make demo` and `make test` need nothing else.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SHARDS ?= shards
WHEELHOUSE ?= wheelhouse
WHEEL_PYTHONS ?= 3.11 3.12
GPU_CHECK_PYTHON ?= 3.12
# DS_ACCELERATOR is left to the machine: the workers set it to cpu where torch sees no CUDA, and
# DeepSpeed picks CUDA on a GPU node (a cpu forced here would put the model on the host there).
export WANDB_SILENT := true
export OMP_NUM_THREADS ?= 1

.PHONY: help setup demo test test-fast test-unit test-dist test-integration gpu-check wheelhouse \
	wheelhouse-gpu-check lint fmt shards clean

# pytest, timed: $(call timed,TIER,ARGS) runs pytest with ARGS in a subshell, prints
# "== TIER: N s wall (exit RC)" and exits with pytest's status. Each tier runs on TEST_JOBS
# pytest-xdist workers; a module's tests stay on one worker (tests/conftest.py: xdist_group).
TEST_JOBS ?= 2
PYTEST := $(VENV)/bin/pytest -q -n $(TEST_JOBS) --dist loadgroup
timed = (start=$$(date +%s); $(PYTEST) $(2); rc=$$?; \
	echo "== $(1): $$(( $$(date +%s) - start )) s wall (exit $$rc)"; exit $$rc)

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the package with pinned dependencies

$(SHARDS)/manifest.json: | $(STAMP)
	$(VENV)/bin/gppf-shards synth --out $(SHARDS)

shards: $(SHARDS)/manifest.json ## Generate the synthetic 8-task corpus into shards/ (if absent)

demo: $(STAMP) $(SHARDS)/manifest.json ## Pre-train tiny GPPF with SIMT on 2 CPU workers; resumes if interrupted
	$(VENV)/bin/gppf-train experiment=demo

test: $(STAMP) ## Lint, then the whole suite: the fast tier, then the slow one, each timed
	$(VENV)/bin/ruff check src tests tools
	@$(call timed,fast tier,-m "not slow" --durations=10 tests); fast=$$?; \
	$(call timed,slow tier,-m slow --durations=25 tests); slow=$$?; exit $$(( fast | slow ))

test-fast: $(STAMP) ## The fast tier for the inner loop: unit and engine-free distributed tests (~1.5 min)
	@$(call timed,fast tier,-m "not slow" --durations=10 tests)

test-unit: $(STAMP) ## Unit tests only (no process groups)
	$(VENV)/bin/pytest -q tests/unit

test-dist: $(STAMP) ## Distributed tests (real gloo process groups)
	$(VENV)/bin/pytest -q tests/dist

test-integration: $(STAMP) ## End-to-end CLI tests
	$(VENV)/bin/pytest -q tests/integration

# `make gpu-check PYTHON=/path/to/python3` (PYTHON given on the command line): no .venv and no
# network; that interpreter's torch, the rest from $(WHEELHOUSE) (tools/gpu_check_offline.sh).
ifeq ($(origin PYTHON),command line)
gpu-check: ## GPU checks of DESIGN.md §6 as one JSON, also in runs/gpu-check.json (CPU smoke without CUDA); PYTHON=/path: offline, that torch
	tools/gpu_check_offline.sh $(PYTHON) $(WHEELHOUSE) runs/gpu-check.json
else
gpu-check: $(STAMP)
	$(VENV)/bin/gppf-bench gpu-check --out runs/gpu-check.json
endif

wheelhouse: $(STAMP) ## Wheels of gppf_dist and every runtime dependency but torch, Python 3.11 and 3.12, in wheelhouse/
	$(PY) tools/wheelhouse.py --out $(WHEELHOUSE) $(foreach v,$(WHEEL_PYTHONS),--python $(v))

wheelhouse-gpu-check: $(STAMP) ## The wheels `make gpu-check PYTHON=...` installs (no W&B), for GPU_CHECK_PYTHON (default 3.12), in wheelhouse/gpu-check/
	$(PY) tools/wheelhouse.py --set gpu-check --out $(WHEELHOUSE)/gpu-check $(foreach v,$(GPU_CHECK_PYTHON),--python $(v))

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check src tests tools
	$(VENV)/bin/ruff format --check src tests tools

fmt: $(STAMP) ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format src tests tools
	$(VENV)/bin/ruff check --fix src tests tools

clean: ## Remove runs and generated shards (keeps .venv)
	rm -rf runs outputs $(SHARDS)/manifest.json $(SHARDS)/*/
