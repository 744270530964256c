# The two commands of the README: `make run` (main job) and `make test` (the test suite).
# Both set everything up first (scripts/setup.sh, a no-op once done).
VENV := .venv
RECIPE ?= examples/sentiment-en.yaml

.PHONY: setup run test lint

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/lmforge run $(RECIPE)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/python -m pytest -q
