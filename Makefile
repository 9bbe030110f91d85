# Machinery: `make run` serves the API with the examples; `make test` installs everything and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
PYTEST_ARGS ?=

.PHONY: install run test lint bench clean browser-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.py requirements_dev.txt requirements_nodeps.txt
	$(BIN)/python -m pip install --quiet -e . -r requirements_dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements_nodeps.txt
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/machinery demo --port $(PORT)

test: install browser-deps
	$(BIN)/ruff check machinery tests examples benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Headless Chromium from Debian for the browser tests (they skip, saying why, where it cannot be had).
browser-deps:
	@bash tests/browser/install-chromium.sh || true

bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check machinery tests examples benchmarks

clean:
	rm -rf $(VENV) .pytest_cache test-output
