# Two commands on a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/quickstart
CONFIG ?= configs/quickstart.py
PYTEST_ARGS ?=

.PHONY: setup run test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Trains the embedded default (resuming if interrupted), samples, then evaluates.
run: setup
	$(PY) -m cofre_jax.main --config=$(CONFIG) --workdir=$(WORKDIR) --mode=train
	$(PY) -m cofre_jax.main --config=$(CONFIG) --workdir=$(WORKDIR) --mode=sample
	$(PY) -m cofre_jax.main --config=$(CONFIG) --workdir=$(WORKDIR) --mode=eval

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .cache
