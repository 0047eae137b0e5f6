# Two set-up commands (see README): `make demo` (set up + main job), `make test` (set up + tests).
# Both are idempotent: the virtualenv is rebuilt only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.posereg-installed

.PHONY: setup demo core-demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: generate (once) the synthetic set, train RLE on it, evaluate, then predict
# on the real COCO photos the repository carries (src/posereg/samples/coco).
REAL_COCO ?= src/posereg/samples/coco
demo: $(STAMP)
	$(BIN)/posereg train configs/synth_rle.yaml --exist-ok
	$(BIN)/posereg predict $(REAL_COCO) --checkpoint runs/synth_rle/best.pt \
		--boxes $(REAL_COCO)/test_coco_det_AP_H_56.json --score-threshold 0.5 \
		--out runs/synth_rle/predict_coco
	@echo "The same model on the real COCO photos with their labelled boxes (it was trained on synthetic people only):"
	$(BIN)/posereg eval configs/synth_rle.yaml --checkpoint runs/synth_rle/best.pt \
		--set data.synth=null data.val_ann=$(REAL_COCO)/test_coco.json data.val_images=$(REAL_COCO)

# The one-minute RLE-vs-L2 demonstration of the loss on synthetic points (no images).
core-demo: $(STAMP)
	$(BIN)/posereg demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache runs
