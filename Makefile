# Quick start: `make demo` runs the node on the synthetic camera; `make test` runs ruff and the tests.
# Each sets up .venv itself (base install for demo, train+dev extras for test) and is fast on a second run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_BASE := $(VENV)/.stamp-base
STAMP_DEV  := $(VENV)/.stamp-dev

.PHONY: demo test lint venv venv-dev default-model camvid-model clean

venv: $(STAMP_BASE)
venv-dev: $(STAMP_DEV)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "perception needs Python >= 3.10; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_BASE): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	@touch $@ $(STAMP_BASE)

demo: $(STAMP_BASE)
	$(BIN)/perception demo

lint: $(STAMP_DEV)
	$(BIN)/ruff check .

test: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out runs
