# litdistill: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of the tested torch, installed first into a venv without torch: pip then keeps
# it (pyproject asks torch>=2.4, constraints.txt leaves torch alone), so nothing pulls a
# multi-GB CUDA build. A torch already there (a GPU user's own build) is kept as it is.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export GLUE_DIR ?= $(abspath ../shared/data/glue)

.PHONY: help install constraints demo test test-slow test-all lint format clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if [ -n "$(TORCH_SPEC)" ] && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,slurm,optuna,export]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install litdistill (editable, tested versions)

constraints: ## Re-record constraints.txt (the tested versions) from the venv's packages
	{ grep '^#' constraints.txt; $(PY) -m pip freeze --exclude litdistill --exclude torch; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt

demo: install ## The main job: zoo MiniLM-L6 teacher -> 3-layer KD student vs baseline, table + plot
	$(PY) -m litdistill.demo $(DEMO_ARGS)

test: install ## Run the fast test suite (no slow tests)
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-slow: install ## Run only the slow tests (DDP, resume, multirun, real models/data)
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS)

test-all: install ## Run every test
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install ## ruff check (rules E, F, I, UP, W)
	$(VENV)/bin/ruff check src tests

format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean: ## Remove run outputs (keeps .venv and caches)
	rm -rf outputs multirun .pytest_cache
