# videocfr — every target creates the virtual environment first if it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATASET ?= demo
CACHE ?= caches/$(DATASET)
# The demo runs with random CLIP weights (nothing can be downloaded); real datasets use default.yaml.
PRECOMPUTE_CONFIG ?= $(if $(filter demo,$(DATASET)),configs/precompute/demo.yaml,configs/precompute/default.yaml)
# `make train`: CF-GRPO of the world's policy on the world's haystacks (built when missing);
# TRAIN_CONFIG=configs/train/tiny.yaml trains the random tiny model on the demo cache instead
TRAIN_CONFIG ?= configs/train/world.yaml
PYTEST_ARGS ?=

.PHONY: install test lint bench precompute train evaluate world world-grpo clean

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

train: install $(if $(filter configs/train/world.yaml,$(TRAIN_CONFIG)),world-grpo)
	$(BIN)/videocfr train --config $(TRAIN_CONFIG) --output-dir $(RUN_DIR)

# V-NIAH on the world's haystacks (METHOD §9): the trained world CLIP, the same CLIP with random
# weights as the control, and the tiny world VLM answering from the chosen frames. `make world`
# trains the models when missing (cached under WORLD_ROOT). The last line printed is the figure:
# vniah_world n=8 chance= uniform= random= novelty= prior= prior_random_clip= qa_uniform= qa_prior=
# A world result is evidence about the mechanism, not a benchmark number.
VNIAH_GRID ?= --lengths 50,130,210 --depths 0,0.2,0.4,0.6,0.8,1.0 --seed 1
WORLD_ROOT ?= caches/world
WORLD_SEED ?= 0
WORLD_DIR = $(WORLD_ROOT)/v$(shell $(BIN)/python -c "from videocfr.world.objects import WORLD_VERSION as v; print(v)" 2>/dev/null)-seed$(WORLD_SEED)
# one folder per world build: a cache precomputed with another version's CLIP is refused
VNIAH_DIR ?= runs/vniah-world-$(notdir $(WORLD_DIR))

evaluate: install world
	$(BIN)/videocfr evaluate vniah build $(VNIAH_DIR) $(VNIAH_GRID)
	$(BIN)/videocfr evaluate vniah run $(VNIAH_DIR) --config configs/precompute/world.yaml \
		--control-config configs/precompute/world_random.yaml --model $(WORLD_DIR)/vlm

# the world's tiny CLIP and VLM (METHOD §9), trained on the CPU; kept under WORLD_ROOT and
# retrained only when the generator's WORLD_VERSION or WORLD_SEED changes
world: install
	$(BIN)/videocfr world build --root $(WORLD_ROOT) --seed $(WORLD_SEED)

# what configs/train/world.yaml reads: the world policy (`videocfr world policy`: the VLM
# fine-tuned to answer "<word> <letter>"), V-NIAH overlay haystacks of 16 and 20 s at 16 depths
# each (K = L candidates at one per second) and their cache with the world CLIP's priors
WORLD_GRPO = $(WORLD_DIR)/grpo
WORLD_GRPO_GRID ?= --lengths 16,20 --needles frame,overlay --seed 21 --depths \
	0.0007,0.0673,0.134,0.2007,0.2673,0.334,0.4007,0.4673,0.534,0.6007,0.6673,0.734,0.8007,0.8673,0.934,1
world-grpo: world
	$(BIN)/videocfr world policy --root $(WORLD_ROOT) --seed $(WORLD_SEED)
	test -f $(WORLD_GRPO)/train/needles.json || \
		$(BIN)/videocfr evaluate vniah build $(WORLD_GRPO)/train $(WORLD_GRPO_GRID)
	$(BIN)/videocfr precompute --config configs/precompute/world.yaml \
		--dataset $(WORLD_GRPO)/train/dataset.yaml --out $(WORLD_GRPO)/train-cache

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
