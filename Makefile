# Two entry points on a fresh machine (see README):
#   make repro   set up .venv and run the whole pipeline (dvc repro)
#   make test    set up .venv and run the test suite (unit tests + every notebook)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup repro test test-browser bench deps

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

repro: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: setup
	$(BIN)/python -m pytest -n 2 -m "not browser" --durations=10 tests
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=600 notebooks

test-browser: setup
	bash tests/browser/setup_chromium.sh
	$(BIN)/python -m pytest -m browser tests/browser

bench: setup
	$(BIN)/python benchmarks/pixtrace.py
	$(BIN)/python benchmarks/copynce.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/metrics.py

deps: setup  # after changing a pipeline module's imports: dvc.yaml deps = the code each stage runs
	$(BIN)/python tools/sync_dvc_deps.py
