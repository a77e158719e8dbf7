# prodstack: the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help venv engine packages images-prereq targets up down status test lint test-app \
        test-containers molecule resilience bench clean vm vm-down molecule-vm molecule-vm-full

help:
	@echo "make up      deploy the stack to a local throwaway Debian 12 target and print its URL"
	@echo "make down    remove that target"
	@echo "make status  the stack's containers on the local target (the seed's 'docker compose ps')"
	@echo "make test    lint, app tests, container tests, molecule test, failure tests (what CI runs)"
	@echo "make bench   benchmark against the seed's way; writes docs/PERFORMANCE.md"
	@echo "make resilience  the timed failure tests alone; writes docs/RESILIENCE.md"
	@echo "make vm      deploy the stack to a real Debian 12 VM (QEMU) over SSH and print its URL"
	@echo "make vm-down stop that VM and remove its disk overlay"

$(VENV)/.installed: requirements-dev.txt app/requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

engine:
	@scripts/ensure-docker.sh

packages:
	@scripts/ensure-packages.sh

# The base images and the systemd "VM" images the targets boot from.
targets: engine packages
	@scripts/build-target-image.sh bookworm >/dev/null
	@scripts/build-target-image.sh trixie >/dev/null

up: venv engine packages
	@scripts/build-target-image.sh bookworm >/dev/null
	@scripts/local-target.sh up
	ansible-playbook -i inventory/local site.yml
	@echo
	@curl -fsS http://127.0.0.1:$${PRODSTACK_LOCAL_PORT:-8080}/health
	@curl -fsS http://127.0.0.1:$${PRODSTACK_LOCAL_PORT:-8080}/ && echo
	@echo "The stack is up: http://127.0.0.1:$${PRODSTACK_LOCAL_PORT:-8080}/"
	@echo "           and https://127.0.0.1:$${PRODSTACK_LOCAL_TLS_PORT:-8443}/ (self-signed certificate)"

down: engine
	@scripts/local-target.sh down

status: venv
	ansible-playbook -i inventory/local playbooks/status.yml

lint: venv
	yamllint --strict .
	python3 scripts/render-nginx-default.py --check
	python3 scripts/document-variables.py --check
	ansible-lint
	ruff check app tests molecule bench scripts roles
	ruff format --check app tests molecule bench scripts roles
	cd app && mypy --strict prodstack_app

test-app: venv packages
	cd app && pytest -q

test-containers: venv engine packages
	pytest -q tests/containers

molecule: venv targets
	scripts/molecule-test.sh default

# A real VM (docs/VM.md): QEMU boots a cached Debian disk; site.yml runs over SSH through an
# inventory shaped like inventory/example. VM_SUITE=trixie, VM_DOCKER=0 pick other disks.
VM_NAME ?= prodstack
vm: venv engine
	@scripts/vm/vm.sh up $(VM_NAME)
	@scripts/vm/vm.sh inventory $(VM_NAME) .cache/vm/run/$(VM_NAME)/inventory
	ansible-playbook -i .cache/vm/run/$(VM_NAME)/inventory site.yml
	@http=$$(scripts/vm/vm.sh port $(VM_NAME) 8080) && https=$$(scripts/vm/vm.sh port $(VM_NAME) 8443) && \
	  curl -fsS http://$$http/health && \
	  echo "The stack is up on the VM: http://$$http/" && \
	  echo "                       and https://$$https/ (self-signed certificate)" && \
	  echo "ssh into it: scripts/vm/vm.sh ssh $(VM_NAME)"

vm-down:
	@scripts/vm/vm.sh down $(VM_NAME)

# The VM scenario: the make test form (create, converge, verify subset, one reboot) and the
# rest for make test-full (idempotence, full verify, a disk without docker.io, Debian 13).
molecule-vm: venv engine
	scripts/vm/molecule-vm.sh smoke

molecule-vm-full: venv engine
	scripts/vm/molecule-vm.sh full

# The benchmark: the deployed stack against the seed's way, in one run; rewrites
# docs/PERFORMANCE.md (about 10 minutes on an idle 2-core machine).
bench: venv engine packages
	bench/run.sh

# The timed failure tests; rewrite docs/RESILIENCE.md (18 minutes in the last fresh-clone CI run).
resilience: venv targets
	scripts/molecule-test.sh resilience

# Each stage has a time budget (seconds) and prints what it used; the sum stays well under
# CI's 90-minute limit.
test: venv engine packages
	@scripts/stage.sh lint 300 $(MAKE) --no-print-directory lint
	@scripts/stage.sh app 300 $(MAKE) --no-print-directory test-app
	@scripts/stage.sh containers 600 $(MAKE) --no-print-directory test-containers
	@scripts/stage.sh molecule 1500 $(MAKE) --no-print-directory molecule
	@scripts/stage.sh resilience 2100 $(MAKE) --no-print-directory resilience

clean: down
	rm -rf .cache app/wheels
