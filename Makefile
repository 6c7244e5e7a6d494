# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv if missing, installs, runs the main study offline
#   make test   the same install, then the test suite
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-all gradcheck ui bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the main job: the polynomial-order study, offline, on the embedded default
	$(VENV)/bin/overfit pipeline run pipelines/polynomial_order.yaml

test: $(STAMP)  ## the default test suite (slow tests excluded), one worker per core
	$(PY) -m pytest -n auto

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -m ''

gradcheck: $(STAMP)
	$(VENV)/bin/overfit gradcheck

ui: $(STAMP)  ## the MLflow UI on the project's store, http://127.0.0.1:5000 (for a tracking server: its address)
	$(VENV)/bin/overfit ui --run

bench: $(STAMP)  ## one point against a bare loop; the 180-point study three ways; a rerun that reuses everything
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_sweep.py
	$(PY) benchmarks/bench_reuse.py

clean:
	rm -rf outputs multirun reports
