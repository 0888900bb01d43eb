# One entry point for people and CI.  `make test` works on a fresh machine:
# it creates .venv, installs the project with its dev extra, makes sure a
# Chromium is available, then runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: setup browser test e2e unit lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) browser

browser: $(STAMP)
	$(PY) -m harness ensure-browser

test: setup
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

e2e: setup
	$(PY) -m pytest -n 2 e2e $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -n 2 tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check harness reference_server tests e2e benchmarks
	$(PY) -m mypy harness reference_server

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
