# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gateway demo

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

format: $(STAMP)
	$(BIN)/ruff check --fix gateway tests bench
	$(BIN)/ruff format gateway tests bench

bench: $(STAMP)
	$(BIN)/python bench/stream.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .pytest_cache .ruff_cache
