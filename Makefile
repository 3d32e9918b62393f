# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
#
# torch is installed FIRST and pinned to the CPU wheel that the project machines hold (torch==2.13.0);
# letting pip resolve plain `torch` would download multi-GB CUDA wheels. The package itself declares a range.

SHELL := /bin/bash

VENV        := .venv
VENV_PY     := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
TORCH_SPEC  ?= torch==2.13.0
PYTHON      ?= $(shell if python3.11 -c '' >/dev/null 2>&1; then echo python3.11; else echo python3; fi)
PYTEST_ARGS ?=
LINT_PATHS  := $(wildcard eprop_l2l tests benchmarks scripts)

export WANDB_MODE ?= offline

.PHONY: venv test lint format demo bench clean distclean

venv: $(STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install $(TORCH_SPEC)
	$(VENV_PY) -m pip install -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)

format: venv
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

test: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV_PY) -m pytest -q -x --durations=15 $(PYTEST_ARGS)

# e-prop 2 in minutes: meta-trains the `demo` preset (the cpu sizes, 600 meta-iterations) into runs/demo,
# evaluates one-shot learning on 100 held-out movements and prints the table and where the figure and the
# offline W&B run are. Running it again resumes/re-evaluates the same run directory.
demo: venv
	$(VENV)/bin/eprop-l2l train experiment=demo $(DEMO_ARGS)

bench: venv
	$(VENV)/bin/eprop-l2l bench trial
	$(VENV)/bin/eprop-l2l bench meta

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
