# The commands people type. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install demo fleet test test-fast lint typecheck bench clean
.PHONY: image worker-image sandbox-image wheelhouse up down ps logs wave

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install WAVE with its test tools

# The demo's QA runs tests in bubblewrap: installed here where missing (as root), or one line says how.
SANDBOX_READY = test "$$WAVE_SANDBOX" = none || tests/prepare-machine.sh --demo

demo: install ## the fleet on an embedded Redis with the offline agents: sample stories to done
	@$(SANDBOX_READY)
	$(BIN)/wave demo

fleet: install ## the embedded fleet (`wave up`) until Ctrl-C
	@$(SANDBOX_READY)
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
# The secrets live in compose/.env, which `make up` creates (0600, fresh passwords) when missing.
DOMAIN     ?= all
FLEET_IMAGE ?= wave-fleet:latest
# the stage containers' image (wave sandbox; WAVE_SANDBOX_CONTAINER__IMAGE in the fleet's settings)
SANDBOX_IMAGE ?= wave-sandbox:latest
BASE_IMAGE ?= python:3.12-slim
WHEELHOUSE ?= docker/wheelhouse
HALT_DIR   ?= $(CURDIR)/.wave/halt
ENV_FILE   ?= $(CURDIR)/compose/.env
DOZZLE_USERS_FILE ?= $(CURDIR)/.wave/dozzle/users.yml
# the group that owns the Docker socket, added to the two Docker API proxies (non-root) alone
DOCKER_GID ?= $(shell stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)
COMPOSE_PROJECT_NAME ?= wave
COMPOSE_PROFILES     ?= dozzle
COMPOSE    ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
DOMAIN_FILES = $(filter-out compose/base.yml compose/common.yml,$(wildcard compose/*.yml))
DC_FILES   = -f compose/base.yml $(if $(filter all,$(DOMAIN)),$(addprefix -f ,$(DOMAIN_FILES)),-f compose/$(DOMAIN).yml)
DC_ENV     = FLEET_IMAGE='$(FLEET_IMAGE)' HALT_DIR='$(HALT_DIR)' COMPOSE_PROJECT_NAME='$(COMPOSE_PROJECT_NAME)' \
             COMPOSE_PROFILES='$(COMPOSE_PROFILES)' DOCKER_GID='$(DOCKER_GID)' SANDBOX_IMAGE='$(SANDBOX_IMAGE)' \
             DOZZLE_USERS_FILE='$(DOZZLE_USERS_FILE)'
DC         = $(DC_ENV) $(COMPOSE) --env-file $(ENV_FILE) -p $(COMPOSE_PROJECT_NAME) $(DC_FILES)
# down, ps and logs create nothing: they must work without compose/.env too (checked when they run)
SECRETS    = REDIS_ADMIN_PASSWORD REDIS_WORKER_PASSWORD REDIS_SUPERVISOR_PASSWORD REDIS_WATCHER_PASSWORD \
             REDIS_OPERATOR_PASSWORD REDIS_SANDBOX_PASSWORD REDIS_NOTIFIER_PASSWORD
ENV_OR_NOT = $(if $(wildcard $(ENV_FILE)),--env-file $(ENV_FILE),)
UNUSED     = $(if $(wildcard $(ENV_FILE)),,$(foreach s,$(SECRETS),$(s)="$${$(s):-unused}"))
DC_LOOK    = $(UNUSED) $(DC_ENV) $(COMPOSE) $(ENV_OR_NOT) -p $(COMPOSE_PROJECT_NAME) $(DC_FILES)
DC_ALL     = $(UNUSED) $(DC_ENV) $(COMPOSE) $(ENV_OR_NOT) -p $(COMPOSE_PROJECT_NAME) \
             -f compose/base.yml $(addprefix -f ,$(DOMAIN_FILES))

image: worker-image sandbox-image ## build both images (BASE_IMAGE=..., wheels from docker/wheelhouse if any)

worker-image: ## build the worker image alone (docker/Dockerfile): FLEET_IMAGE
	docker build -f docker/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg WHEELHOUSE=$(WHEELHOUSE) -t $(FLEET_IMAGE) .

sandbox-image: ## build the image agents' commands run in alone (docker/sandbox.Dockerfile): SANDBOX_IMAGE
	docker build -f docker/sandbox.Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg WHEELHOUSE=$(WHEELHOUSE) -t $(SANDBOX_IMAGE) .

# async-timeout: redis-py needs it on Python < 3.11.3 (Debian 12's 3.11.2), whatever builds the wheels.
wheelhouse: install ## wheels of WAVE and its dependencies for offline image builds
	$(BIN)/python -m pip wheel --quiet -w $(WHEELHOUSE) . pytest setuptools 'async-timeout>=4.0.3'

up: ## the fleet in Docker: make up DOMAIN=auth|payments|all (creates compose/.env if missing)
	@test "$(DOMAIN)" = all || test -f compose/$(DOMAIN).yml || \
		{ echo "make up: no compose/$(DOMAIN).yml; DOMAIN is all or one of: $(notdir $(basename $(DOMAIN_FILES)))" >&2; exit 2; }
	@docker/compose-secrets.sh env $(ENV_FILE)
	@$(DC) config -q
	@mkdir -p $(HALT_DIR)
	@docker image inspect $(FLEET_IMAGE) >/dev/null 2>&1 || $(MAKE) --no-print-directory worker-image
	@docker image inspect $(SANDBOX_IMAGE) >/dev/null 2>&1 || $(MAKE) --no-print-directory sandbox-image
	@case ",$(COMPOSE_PROFILES)," in *,dozzle,*) \
		test -s $(DOZZLE_USERS_FILE) -a $(DOZZLE_USERS_FILE) -nt $(ENV_FILE) || \
		docker/compose-secrets.sh dozzle-users $(ENV_FILE) $(DOZZLE_USERS_FILE) $(FLEET_IMAGE) ;; esac
	$(DC) up -d

# The stage containers are the sandbox runner's, not compose's: after compose's own, `down` removes
# those a stop cut short (docker/sandbox-leftovers.sh: the runner's label and a bind mount from this
# project's data volume, whose path is read before VOLUMES=1 deletes it).
DATA_VOLUME = $(COMPOSE_PROJECT_NAME)_data
down: ## stop and remove the fleet's containers, its stages' too (VOLUMES=1: also Redis's AOF and the clones)
	@data=$$(docker volume inspect --format '{{.Mountpoint}}' $(DATA_VOLUME) 2>/dev/null); \
	echo "$(COMPOSE) -p $(COMPOSE_PROJECT_NAME) down --remove-orphans $(if $(VOLUMES),--volumes)"; \
	$(DC_ALL) down --remove-orphans $(if $(VOLUMES),--volumes); status=$$?; \
	test -z "$$data" || docker/sandbox-leftovers.sh "$$data" || status=1; exit $$status

ps: ## the fleet's containers and their health
	$(DC_LOOK) ps

logs: ## follow the fleet's logs (SERVICE=auth-fe-1 for one container)
	$(DC_LOOK) logs -f --tail=100 $(SERVICE)

# The operator's Redis user, from compose/.env through the docker client's environment (never a
# command line), for one `wave` command run inside the supervisor's container.
wave: ## a wave command as the operator, in the fleet: make wave ARGS='status' (or 'resume', ...)
	@test -f $(ENV_FILE) || { echo "make wave: no $(ENV_FILE): start the fleet with make up first" >&2; exit 2; }
	@WAVE_REDIS__PASSWORD="$$(sed -n 's/^REDIS_OPERATOR_PASSWORD=//p' $(ENV_FILE) | tail -n 1)" \
		docker exec -i -e WAVE_REDIS__USERNAME=operator -e WAVE_REDIS__PASSWORD \
		$(COMPOSE_PROJECT_NAME)-supervisor wave $(ARGS)

clean: ## remove .venv and the fleet's data dir
	rm -rf $(VENV) .wave
