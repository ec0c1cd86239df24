# Quick start: `make demo` runs the node on the synthetic camera; `make test` runs ruff and the tests.
# Each sets up .venv itself (base install for demo, train+dev extras for test) and is fast on a second run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_BASE := $(VENV)/.stamp-base
STAMP_DEV  := $(VENV)/.stamp-dev

.PHONY: demo test lint venv venv-dev default-model camvid-model clean

# The shipped default model and the CamVid model: the exact recipes of the README.
DEFAULT_MODEL := perception/assets/default.onnx
CAMVID ?= ../shared/data/camvid

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

# Rebuild the shipped default model: train on the synthetic road world, export, verify (~30 min on 2 cores).
default-model: $(STAMP_DEV)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/perception train --config configs/synthetic_default_cpu.yaml --out runs/synthetic_default
	$(BIN)/perception export --checkpoint runs/synthetic_default/best.pt --out $(DEFAULT_MODEL) \
		--verify-data synthetic:count=16
	$(BIN)/perception eval --model $(DEFAULT_MODEL) --data synthetic

# Train, export (FP32 + INT8) and evaluate the real-time CamVid model (~75 min on 2 cores). CamVid's
# licence forbids shipping weights trained on it, so everything stays under runs/ and out/.
camvid-model: $(STAMP_DEV)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/perception train --config configs/camvid_bisenetv2_cpu.yaml --set data=camvid:$(CAMVID) --out runs/camvid_cpu
	$(BIN)/perception export --checkpoint runs/camvid_cpu/best.pt --out out/camvid/bisenetv2.onnx \
		--verify-data camvid:$(CAMVID) --int8 --calib camvid:$(CAMVID) --val-data camvid:$(CAMVID) --val-count 101
	$(BIN)/perception eval --model out/camvid/bisenetv2.onnx --data camvid:$(CAMVID)
	$(BIN)/perception eval --model out/camvid/bisenetv2.int8.onnx --data camvid:$(CAMVID)

clean:
	rm -rf $(VENV) out runs
