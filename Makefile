PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The project's .venv when there is one; the image's Python inside the container.
PY := $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

# Where `make offline` finds PACS: the cartoon images and the other three domains; a folder that
# is not there is not passed, and the profile downloads PACS instead (docs/data.md).
PACS_CARTOON ?= ../shared/data/pacs_cartoon
PACS_SOURCES ?= ../shared/data/pacs_sources

.PHONY: setup demo offline budget test test-fast bench lint docker-smoke clean

setup:  ## create .venv with the pinned dependencies and the package
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .

demo:  ## the whole study on synthetic data, on the CPU, in demo/
	$(PY) -m tlstudy demo --dir demo

offline:  ## the study on real PACS sized for a CPU (profiles/offline.yaml); publishes results/offline/
	$(PY) -m tlstudy profile offline $(if $(wildcard $(PACS_CARTOON)),--data $(PACS_CARTOON)) \
		$(if $(wildcard $(PACS_SOURCES)),--sources $(PACS_SOURCES)) --publish

budget:  ## the pretraining-budget sweep in the offline workspace (hours, resumable; each experiment carried into results/carried/ when done); publishes results/pretraining-budget/
	$(PY) scripts/pretraining-budget.py run $(if $(wildcard $(PACS_CARTOON)),--data $(PACS_CARTOON)) \
		$(if $(wildcard $(PACS_SOURCES)),--sources $(PACS_SOURCES))
	$(PY) scripts/pretraining-budget.py publish

.PHONY: domains
domains:  ## each other PACS domain as the target, as experiments in the offline workspace (hours, resumable; each target carried into results/domains/ when done); publishes results/domains/ (docs/domains.md)
	$(PY) scripts/domains.py run $(if $(wildcard $(PACS_CARTOON)),--data $(PACS_CARTOON)) \
		$(if $(wildcard $(PACS_SOURCES)),--sources $(PACS_SOURCES))
	$(PY) scripts/domains.py publish

test:  ## every test, the end-to-end DVC ones included; a worker per core (at most 4), a test file per worker, the longest files first (tests/conftest.py)
	$(PY) -m pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder --durations 25

test-fast:  ## the tests not marked slow (no end-to-end DVC runs), spread over the cores like `make test`
	$(PY) -m pytest -m "not slow" -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

bench:  ## time the engine against the study's loop; writes metrics/bench.json (BENCH_ARGS="--data DIR ...")
	$(PY) -m tlstudy bench $(BENCH_ARGS)

lint:
	$(PY) -m pre_commit run --all-files

docker-smoke:  ## build the image and run the demo in it (needs a Docker engine)
	scripts/docker-smoke.sh

clean:
	rm -rf demo work .pytest_cache
