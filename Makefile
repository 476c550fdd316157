# The commands people type. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install demo fleet test test-fast lint typecheck bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install WAVE with its test tools

demo: install ## the fleet on an embedded Redis with the offline agents: sample stories to done
	$(BIN)/wave demo

fleet: install ## the embedded fleet (`wave up`) until Ctrl-C
	$(BIN)/wave up

test: install ## the whole test suite (starts its own redis-server and worker processes)
	$(BIN)/python -m pytest

test-fast: install ## the tests without the end-to-end process tests
	$(BIN)/python -m pytest -m 'not slow'

lint: install ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check wavefleet workers

typecheck: install ## mypy --strict on the packages
	$(BIN)/mypy

bench: install ## the benchmark programs (see benchmarks/README.md)
	$(BIN)/python benchmarks/enqueue_throughput.py
	$(BIN)/python benchmarks/pipeline_overhead.py
	$(BIN)/python benchmarks/halt_latency.py
	$(BIN)/python benchmarks/llm_cost.py

clean: ## remove .venv and the fleet's data dir
	rm -rf $(VENV) .wave
