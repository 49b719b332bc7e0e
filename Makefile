# Two entry points on a fresh machine (see README):
#   make repro   set up .venv and run the whole pipeline (dvc repro); make repro PROFILE=quick for a smaller one
#   make test    set up .venv and run the test suite (unit tests + every notebook)
#   make test-min  the library tests in a fresh venv at every declared minimum version
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup repro repro-latest lock test test-min test-browser screenshots bench deps pretrain pretrain-trunk pretrain-dino

setup: $(VENV)/.installed

# Everything: the library, the [pipeline], [viz], [export] and [hashes] extras and the test tools.
# pdqhash (PDQ baseline) compiles from source; without a C++ compiler it is left out, the
# rest still installs, and the evaluation's PDQ row says why it is missing.
# $(1): the venv's python; $(2): extra pip arguments.
define install_all
	$(1) -m pip install --quiet $(2) -e ".[pipeline,viz,export,pretrain,dev]"
	$(1) -m pip install --quiet $(2) -e ".[hashes]" || { \
	  echo "make: pdqhash did not build (it needs a C++ compiler): installing without the PDQ baseline"; \
	  $(1) -m pip install --quiet $(2) "imagehash>=4.3"; }
endef

# The versions behind reports/ (requirements-lock.txt) are the constraints of every install into .venv,
# so `make repro` and `make test` run what the reported run ran; `make repro-latest` takes the newest.
LOCK ?= requirements-lock.txt
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(call install_all,$(BIN)/python,-c $(LOCK))
	touch $@

# The newest release of everything pyproject.toml allows, in its own venv, then the whole pipeline.
LATEST_VENV ?= .venv-latest
repro-latest:
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(call install_all,$(LATEST_VENV)/bin/python,--upgrade)
	PATH="$(abspath $(LATEST_VENV))/bin:$$PATH" dvc repro

# Rewrite the lock from .venv (after an upgrade whose run is to become the reported one).
lock: setup
	{ sed -n '1,2p' $(LOCK); $(BIN)/python -m pip freeze --exclude-editable | grep -v '^icdlib'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

# The committed starts under weights/, re-created (each with its record and learning curve):
# pretrain-trunk: the default run's start, arms.trunk trained 10x its steps, about 40 min on 2 cores;
# pretrain-dino: DINO through lightly on the embedded benchmark's training images, about an hour on 2 cores.
pretrain: pretrain-trunk pretrain-dino

pretrain-trunk: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro data
	$(BIN)/python -m icdlib.pipeline.trunk_start --params params.yaml --out weights/trunk10x_vit_tiny_cpu.safetensors
	PATH="$(abspath $(BIN)):$$PATH" dvc commit --force pretrain_trunk

pretrain-dino: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro data
	$(BIN)/python -m icdlib.train.pretrain --params params.yaml --out weights/dino_vit_tiny_cpu.safetensors --no-resume
	PATH="$(abspath $(BIN)):$$PATH" dvc commit --force pretrain

# Minimum versions: a fresh venv with every declared minimum (constraints-min.txt) and
# the lowest supported Python, then the library tests (not the notebooks).
MIN_PYTHON ?= $(shell python3.10 -c 'import sys; print(sys.executable)' 2>/dev/null || echo $(PYTHON))
MIN_VENV ?= .venv-min
test-min:
	rm -rf $(MIN_VENV)
	$(MIN_PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(call install_all,$(MIN_VENV)/bin/python,-c constraints-min.txt)
	$(MIN_VENV)/bin/python -m pip list --format=freeze | grep -iE "^($$(sed -n 's/==.*//p' constraints-min.txt | paste -sd'|'))=="
	# deselected: a 12-step loss-goes-down check that passes for train seed 0 only, on any versions (README)
	PYTHONPATH=. $(MIN_VENV)/bin/python -m pytest -q -n 2 -m "not browser" -p no:cacheprovider tests \
	  --deselect tests/test_train.py::test_copynce_run_lowers_its_loss_logs_dvclive_and_saves_a_loadable_model

# PROFILE=NAME first switches params.yaml to that profile (quick, tiny, gpu_smoke, ...); `git checkout params.yaml`
# goes back. The venv's bin is put on PATH because the stages call papermill and python by name.
PROFILE ?=
repro: setup
	$(if $(PROFILE),$(BIN)/python -m icdlib.profile $(PROFILE))
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: setup
	$(BIN)/python -m pytest -n 2 -m "not browser" --durations=10 tests
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=600 notebooks

test-browser: setup
	bash tests/browser/setup_chromium.sh
	$(BIN)/python -m pytest -m browser tests/browser

# The committed pictures (reports/screenshots/*.png), taken from a finished run: the explorer, its results tab and
# the search gallery on that run's benchmark and models, in headless Chromium (tools/screenshots.py).
# RUN: the folder where the pipeline ran (default: here, after make repro).
RUN ?= .
screenshots: setup
	bash tests/browser/setup_chromium.sh
	$(BIN)/python tools/screenshots.py --run $(RUN)

# The speed benchmarks (benchmarks/, reports under reports/benchmarks/). The research experiments
# (experiments/) read a finished pipeline run: each script's docstring gives its command and report.
bench: setup
	$(BIN)/python benchmarks/pixtrace.py
	$(BIN)/python benchmarks/copynce.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/metrics.py

deps: setup  # after changing a pipeline module's imports: dvc.yaml deps = the code each stage runs
	$(BIN)/python tools/sync_dvc_deps.py
