# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
#
# torch is installed FIRST and pinned to the CPU wheel that the project machines hold (torch==2.13.0);
# letting pip resolve plain `torch` would download multi-GB CUDA wheels. The package itself declares a range.

SHELL := /bin/bash

VENV        := .venv
VENV_PY     := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
DEV_STAMP   := $(VENV)/.installed-dev
TORCH_SPEC  ?= torch==2.13.0
PYTHON      ?= $(shell if python3.11 -c '' >/dev/null 2>&1; then echo python3.11; else echo python3; fi)
PYTEST_ARGS ?=
# Lava (lava-nc 0.10.0) supports CPython 3.10 only: its own venv, numpy + lava-nc, no torch (docs/lava.md).
LAVA_VENV   := .venv-lava
LAVA_PY     := $(LAVA_VENV)/bin/python
LAVA_STAMP  := $(LAVA_VENV)/.installed
LAVA_SPEC   ?= lava-nc==0.10.0 'numpy>=1.24.4,<2'
PYTHON310   ?= $(shell p="$$(pyenv root 2>/dev/null)/versions/3.10.13/bin/python"; \
                 if [ -x "$$p" ] && "$$p" -c '' >/dev/null 2>&1; then echo "$$p"; \
                 elif python3.10 -c '' >/dev/null 2>&1; then echo python3.10; fi)
LINT_PATHS  := $(wildcard eprop_l2l tests benchmarks scripts)

export WANDB_MODE ?= offline
# the venv's tools (ninja for torch's C++ extension builder) on PATH for everything the targets run
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv dev lava-env test lint format docs demo bench clean distclean

# venv: the package alone (what `make demo` runs); dev: + the dev and docs extras (tests, lint, the docs site)
venv: $(STAMP)
dev: $(DEV_STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install $(TORCH_SPEC)
	$(VENV_PY) -m pip install -e .
	touch $@

$(DEV_STAMP): $(STAMP)
	$(VENV_PY) -m pip install -e '.[dev,docs]'
	touch $@

# .venv-lava: CPython 3.10 ($$(pyenv root)/versions/3.10.13, else python3.10 on PATH) with lava-nc and numpy only.
lava-env: $(LAVA_STAMP)

$(LAVA_STAMP):
	@if [ -z "$(PYTHON310)" ]; then echo "make lava-env: no CPython 3.10 found (neither $$(pyenv root 2>/dev/null || echo '<pyenv root>')/versions/3.10.13/bin/python nor python3.10 on PATH); Lava needs Python 3.10" >&2; exit 1; fi
	$(PYTHON310) -m venv $(LAVA_VENV)
	$(LAVA_PY) -m pip install -q $(LAVA_SPEC)
	touch $@

lint: dev
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/lint-imports

format: dev
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

# .venv-lava for the Lava tests (tests/test_lava.py) when a CPython 3.10 exists; without one they skip.
# The suite builds the native loops into this checkout's own extension cache: a lock that another process left in a
# shared cache (a killed build, a cache copied while it was held) cannot stall it.
test: export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions
test: dev
	@if [ -n "$(PYTHON310)" ]; then $(MAKE) --no-print-directory lava-env; \
	 else echo "make test: no CPython 3.10 found: the Lava tests will skip (make lava-env)"; fi
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/lint-imports  # the layer contracts of .importlinter
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir "$$(mktemp -d)"  # broken links or API references fail here
	@# build the native time loops once, up front and loudly (a failed build is an error here, not a fallback)
	EPROP_L2L_NATIVE=1 $(VENV_PY) -c "from eprop_l2l.numerics import native; print('native time loops:', native.module().__name__)"
	$(VENV_PY) -m pytest -q -x --durations=15 $(PYTEST_ARGS)

# e-prop 2 in minutes: meta-trains the `demo` preset (the cpu sizes, 600 meta-iterations) into runs/demo,
# evaluates one-shot learning on 100 held-out movements and prints the table and where the figure and the
# offline W&B run are. Running it again resumes/re-evaluates the same run directory.
demo: venv
	$(VENV)/bin/eprop-l2l train experiment=demo $(DEMO_ARGS)

# the documentation site into site/ (mkdocs.yml; strict: a broken link or API reference is an error)
docs: dev
	$(VENV)/bin/mkdocs build --strict

bench: venv
	$(VENV)/bin/eprop-l2l bench trial
	$(VENV)/bin/eprop-l2l bench meta
	$(VENV)/bin/eprop-l2l bench online --no-memory

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(LAVA_VENV)
