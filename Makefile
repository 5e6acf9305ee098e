# Quick start: `make run` (install + start the embedded default service), `make test` (install + all tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/local.yaml
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test run test lint bench clean image

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	bash scripts/install-system-deps.sh
	touch $@ $(STAMP)

install: $(STAMP)
install-test: $(TEST_STAMP)

run: $(STAMP)
	$(BIN)/engine run --config $(CONFIG)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(TEST_STAMP)
	$(BIN)/ruff check engine pipelines tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_oru.py
	$(BIN)/python bench/bench_mllp.py

# The container image without a registry (debootstrap base once per machine, podman build): README "Container image".
image:
	bash scripts/build-image.sh

clean:
	rm -rf $(VENV) var build *.egg-info
