# The commands people type. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install demo fleet test test-fast lint typecheck bench clean
.PHONY: image wheelhouse up down ps logs

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

# tests/prepare-machine.sh installs (as root, with apt-get) and starts what the tests need beyond
# PyPI, or says in one line what is missing; it only looks when all is there. `demo` needs none of it.
test: install ## the whole test suite (first readies the machine: tests/prepare-machine.sh)
	tests/prepare-machine.sh
	$(BIN)/python -m pytest

test-fast: install ## the tests without the end-to-end process tests (nor Docker)
	tests/prepare-machine.sh --no-docker
	$(BIN)/python -m pytest -m 'not slow'

lint: install ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy --strict on the packages
	$(BIN)/mypy

bench: install ## the benchmark programs (see benchmarks/README.md)
	$(BIN)/python benchmarks/enqueue_throughput.py
	$(BIN)/python benchmarks/pipeline_overhead.py
	$(BIN)/python benchmarks/halt_latency.py
	$(BIN)/python benchmarks/llm_cost.py

# Docker: the fleet as containers (docker/, compose/; README "Running in Docker"). Works with
# `docker compose` (v2) or `docker-compose` (v1). Compose's variables are passed per command, not
# exported, and none starts with WAVE_ (the `wave` command refuses WAVE_* names it does not know).
DOMAIN     ?= all
FLEET_IMAGE ?= wave-fleet:latest
BASE_IMAGE ?= python:3.12-slim
WHEELHOUSE ?= docker/wheelhouse
HALT_DIR   ?= $(CURDIR)/.wave/halt
COMPOSE_PROJECT_NAME ?= wave
COMPOSE_PROFILES     ?= dozzle
COMPOSE    ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
DOMAIN_FILES = $(filter-out compose/base.yml compose/common.yml,$(wildcard compose/*.yml))
DC_FILES   = -f compose/base.yml $(if $(filter all,$(DOMAIN)),$(addprefix -f ,$(DOMAIN_FILES)),-f compose/$(DOMAIN).yml)
DC_ENV     = FLEET_IMAGE='$(FLEET_IMAGE)' HALT_DIR='$(HALT_DIR)' COMPOSE_PROJECT_NAME='$(COMPOSE_PROJECT_NAME)' \
             COMPOSE_PROFILES='$(COMPOSE_PROFILES)'
DC         = $(DC_ENV) $(COMPOSE) -p $(COMPOSE_PROJECT_NAME) $(DC_FILES)
# down, ps and logs create nothing: they must work without the password too
DC_LOOK    = WAVE_REDIS__PASSWORD="$${WAVE_REDIS__PASSWORD:-unused}" $(DC)
DC_ALL     = WAVE_REDIS__PASSWORD="$${WAVE_REDIS__PASSWORD:-unused}" $(DC_ENV) $(COMPOSE) \
             -p $(COMPOSE_PROJECT_NAME) -f compose/base.yml $(addprefix -f ,$(DOMAIN_FILES))

image: ## build the worker image (BASE_IMAGE=..., wheels from docker/wheelhouse if any)
	docker build -f docker/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg WHEELHOUSE=$(WHEELHOUSE) -t $(FLEET_IMAGE) .

# async-timeout: redis-py needs it on Python < 3.11.3 (Debian 12's 3.11.2), whatever builds the wheels.
wheelhouse: install ## wheels of WAVE and its dependencies for offline image builds
	$(BIN)/python -m pip wheel --quiet -w $(WHEELHOUSE) . pytest setuptools 'async-timeout>=4.0.3'

up: ## the fleet in Docker: make up DOMAIN=auth|payments|all (needs WAVE_REDIS__PASSWORD)
	@test "$(DOMAIN)" = all || test -f compose/$(DOMAIN).yml || \
		{ echo "make up: no compose/$(DOMAIN).yml; DOMAIN is all or one of: $(notdir $(basename $(DOMAIN_FILES)))" >&2; exit 2; }
	@test -n "$$WAVE_REDIS__PASSWORD" || grep -qs '^WAVE_REDIS__PASSWORD=.' compose/.env || \
		{ echo "make up: set WAVE_REDIS__PASSWORD (in compose/.env or the environment): Redis never runs without a password" >&2; exit 2; }
	@$(DC) config -q
	@mkdir -p $(HALT_DIR)
	@docker image inspect $(FLEET_IMAGE) >/dev/null 2>&1 || $(MAKE) --no-print-directory image
	$(DC) up -d

down: ## stop and remove the fleet's containers (VOLUMES=1: also Redis's AOF and the clones)
	$(DC_ALL) down --remove-orphans $(if $(VOLUMES),--volumes)

ps: ## the fleet's containers and their health
	$(DC_LOOK) ps

logs: ## follow the fleet's logs (SERVICE=auth-fe-1 for one container)
	$(DC_LOOK) logs -f --tail=100 $(SERVICE)

clean: ## remove .venv and the fleet's data dir
	rm -rf $(VENV) .wave
