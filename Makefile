PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast lint clean

setup:  ## create .venv with the pinned dependencies and the package
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .

demo:  ## the whole study on synthetic data, on the CPU, in demo/
	$(BIN)/python -m tlstudy demo --dir demo

test:  ## every test, the end-to-end DVC ones included
	$(BIN)/python -m pytest

test-fast:
	$(BIN)/python -m pytest -m "not slow"

lint:
	$(BIN)/pre-commit run --all-files

clean:
	rm -rf demo work .pytest_cache
