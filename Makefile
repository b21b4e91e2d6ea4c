# Idios command launcher. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[serve]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.serve

.PHONY: help install run test lint format doc

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(VENV)/.serve ## create .venv and install Idios with its embedded Milvus

run: $(VENV)/.serve ## install, then start `idios serve` (API + worker + embedded Milvus) on port 4213
	$(BIN)/idios serve

test: $(VENV)/.dev ## install the dev extras, then lint and run the test suite
	$(BIN)/ruff check app tests benchmarks
	$(BIN)/ruff format --check app tests benchmarks
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev ## ruff check and format check
	$(BIN)/ruff check app tests benchmarks
	$(BIN)/ruff format --check app tests benchmarks

format: $(VENV)/.dev ## format the code
	$(BIN)/ruff format app tests benchmarks
	$(BIN)/ruff check --fix app tests benchmarks

doc: $(VENV)/.serve ## regenerate doc/openapi.yaml, doc/api.html and the README's settings table
	env -u IDIOS_LOG_LEVEL $(BIN)/idios openapi --out doc --readme README.md
