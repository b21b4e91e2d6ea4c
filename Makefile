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

# Docker stacks: docker/docker-compose.<stack>.yml with its settings in docker/<stack>.env
# (copy docker/<stack>.env.example and fill it in).
DOCKER ?= docker
compose = $(DOCKER) $(if $(2),--context $(2)) compose -p $(if $(2),$(2),idios) -f docker/docker-compose.$(1).yml --env-file docker/$(1).env
N ?= 2
CONTEXT ?= idios-worker
MODEL ?= vit_b32
DIR ?= backup/$(MODEL)
API ?= http://127.0.0.1:4213

# Infrastructure: infra/terraform/$(CLOUD) (copy terraform.tfvars.example to terraform.tfvars).
TF ?= terraform
CLOUD ?= aws
TF_DIR := infra/terraform/$(CLOUD)
INVENTORY ?= infra/ansible/inventory/terraform.yml

ANSIBLE_INVENTORY ?= inventory/terraform.yml
ANSIBLE_ARGS ?= --ask-vault-pass
ansible = cd infra/ansible && $(CURDIR)/$(BIN)/ansible-playbook -i $(ANSIBLE_INVENTORY) $(ANSIBLE_ARGS)

.PHONY: provision inventory deploy scale-workers backup
.PHONY: help install run test-deps test test-unit fuzz bench lint format doc up down logs deploy-frontend deploy-milvus deploy-worker scale-worker-node dump restore

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: $(VENV)/.serve ## create .venv and install Idios with its embedded Milvus

run: $(VENV)/.serve ## install, then start `idios serve` (API + worker + embedded Milvus) on port 4213
	$(BIN)/idios serve

test-deps: ## check what the tests need from the machine (Chromium, docker-compose, RabbitMQ); as root, install it
	PYTHON=$(PYTHON) VENV=$(VENV) bash tests/setup-machine.sh

test: test-deps $(VENV)/.dev ## set up the machine (test-deps), install the dev extras, then lint, type check and run the test suite
	$(BIN)/ruff check app tests benchmarks
	$(BIN)/ruff format --check app tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(VENV)/.dev ## run the unit layer alone (tests/unit: no broker, no Milvus, inet sockets blocked; under 30 s)
	$(BIN)/pytest tests/unit -n 2 --disable-socket --allow-unix-socket -p no:schemathesis -p no:locust -p no:pytest11.testinfra $(PYTEST_ARGS)

FUZZ_SECONDS ?= 120
FUZZ_TARGETS ?=
fuzz: $(VENV)/.dev ## fuzz each input parser FUZZ_SECONDS (120) s; new coverage goes into tests/e2e/fuzz/corpus/ (see tests/e2e/fuzz/fuzz.py)
	$(BIN)/python tests/e2e/fuzz/fuzz.py campaign --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

BENCH_ARGS ?=
bench: $(VENV)/.dev ## benchmark a local stack, write benchmarks/results/<date>-<host>.md (BENCH_ARGS=--quick: 5 min)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: $(VENV)/.dev ## ruff check and format check, mypy type check
	$(BIN)/ruff check app tests benchmarks
	$(BIN)/ruff format --check app tests benchmarks
	$(BIN)/mypy

format: $(VENV)/.dev ## format the code
	$(BIN)/ruff format app tests benchmarks
	$(BIN)/ruff check --fix app tests benchmarks

doc: $(VENV)/.serve ## regenerate doc/openapi.yaml, doc/api.html and the settings table of doc/configuration.md
	env -u IDIOS_LOG_LEVEL $(BIN)/idios openapi --out doc --settings-table doc/configuration.md

up: ## start the development stack on this machine (docker/docker-compose.dev.yml, docker/dev.env)
	$(call compose,dev) up -d --build

down: ## stop the development stack (volumes are kept)
	$(call compose,dev) down

logs: ## follow the development stack's logs
	$(call compose,dev) logs -f --tail=200

deploy-frontend: ## deploy Traefik, the API and RabbitMQ through the docker context idios-frontend
	$(call compose,frontend,idios-frontend) up -d --build --remove-orphans

deploy-milvus: ## deploy Milvus, etcd and MinIO through the docker context idios-milvus
	$(call compose,milvus,idios-milvus) up -d --build --remove-orphans

deploy-worker: ## deploy the workers through the docker context idios-worker
	$(call compose,worker,idios-worker) up -d --build --remove-orphans

scale-worker-node: ## run N workers on one worker node: make scale-worker-node N=4 CONTEXT=idios-worker
	$(call compose,worker,$(CONTEXT)) up -d --no-recreate --scale worker=$(N)

dump: $(VENV)/.serve ## write every entry of MODEL to DIR through the API: make dump MODEL=vit_b32 DIR=backup API=...
	$(BIN)/idios dump $(MODEL) $(DIR) --api $(API)

restore: $(VENV)/.serve ## store the entries in DIR into MODEL through the API: make restore MODEL=vit_b32 DIR=backup
	$(BIN)/idios restore $(MODEL) $(DIR) --api $(API)

provision: ## create or update the cloud nodes with Terraform (infra/terraform/$(CLOUD)/terraform.tfvars)
	$(TF) -chdir=$(TF_DIR) init -input=false
	$(TF) -chdir=$(TF_DIR) apply

inventory: ## write the Ansible inventory from Terraform's outputs
	mkdir -p $(dir $(INVENTORY))
	$(TF) -chdir=$(TF_DIR) output -raw inventory_yaml > $(INVENTORY)

deploy: $(VENV)/.dev ## bare hosts to running stacks with Ansible (infra/ansible/playbooks/site.yml)
	$(ansible) playbooks/site.yml

scale-workers: $(VENV)/.dev ## N workers in all, spread over the worker hosts (GPU-aware): make scale-workers N=8
	$(ansible) playbooks/scale-workers.yml -e workers=$(N)

backup: $(VENV)/.dev ## dump every model through the API into backup/<date>/ (infra/ansible/playbooks/backup.yml)
	$(ansible) playbooks/backup.yml
