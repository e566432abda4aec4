# videocfr — every target creates the virtual environment first if it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATASET ?= demo
CACHE ?= caches/$(DATASET)
# The demo runs with random CLIP weights (nothing can be downloaded); real datasets use default.yaml.
PRECOMPUTE_CONFIG ?= $(if $(filter demo,$(DATASET)),configs/precompute/demo.yaml,configs/precompute/default.yaml)
TRAIN_CONFIG ?= configs/train/tiny.yaml
PYTEST_ARGS ?=

.PHONY: install test lint bench precompute train evaluate world clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/bench_lookup.py
	$(BIN)/python benchmarks/bench_precompute.py
	$(BIN)/python benchmarks/bench_train_step.py

precompute: install
	$(BIN)/videocfr precompute --config $(PRECOMPUTE_CONFIG) --dataset $(DATASET) --out $(CACHE)

# each `make train` gets a fresh run directory (resume one with: videocfr train --resume ...)
RUN_DIR ?= runs/train-$(shell date +%Y%m%d-%H%M%S)

train: install
	$(BIN)/videocfr train --config $(TRAIN_CONFIG) --output-dir $(RUN_DIR)

# the small V-NIAH grid on CPU (random CLIP weights): haystacks, precompute, hit rates, heatmaps
VNIAH_DIR ?= runs/vniah-small

evaluate: install
	$(BIN)/videocfr evaluate vniah build $(VNIAH_DIR) --small
	$(BIN)/videocfr evaluate vniah run $(VNIAH_DIR) --config configs/precompute/selection_cpu.yaml

# the world's tiny CLIP and VLM (METHOD §9), trained on the CPU; kept under WORLD_ROOT and
# retrained only when the generator's WORLD_VERSION or WORLD_SEED changes
WORLD_ROOT ?= caches/world
WORLD_SEED ?= 0

world: install
	$(BIN)/videocfr world build --root $(WORLD_ROOT) --seed $(WORLD_SEED)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
