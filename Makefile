# The two commands: `make test` and `make demo`. Both create .venv, install the pinned requirements,
# build Horovod against the installed TensorFlow, and re-run fast when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test test-fast lint demo clean-demo bench help image test-image compose

help:
	@echo "make test   - set up .venv (requirements + Horovod) and run the test suite"
	@echo "make test-fast - the edit loop: tests that train no model in a subprocess and run no notebook"
	@echo "make lint   - ruff (lint + format check) and the layer contracts (lint-imports)"
	@echo "make demo   - set up, then run all notebooks on params/local (real Wikipedia slice) into runs/demo/"
	@echo "make bench  - run the benchmark scripts in bench/ (minutes; prints ratios vs peers)"
	@echo "make image  - build the SageMaker training image locally (root: installs/starts Docker)"
	@echo "make test-image - make image, then run SageMaker jobs in it across 2 hosts (tests/image)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

$(VENV)/.deps: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(VENV)/.horovod: $(VENV)/.deps container/install_horovod.sh
	PYTHON=$(CURDIR)/$(BIN)/python bash container/install_horovod.sh
	touch $@

# reference implementations the tests compare against, outside the venv's site-packages
$(VENV)/.peers: requirements-peers.txt | $(BIN)/python
	rm -rf $(VENV)/peers
	$(BIN)/pip install -q --no-deps --target $(VENV)/peers -r requirements-peers.txt
	touch $@

setup: $(VENV)/.deps $(VENV)/.horovod $(VENV)/.peers

# pytest-xdist: TEST_WORKERS processes (a module's tests stay in one, with its fixtures), given the
# modules in collection order: pytest-randomly's shuffle (it prints the seed; `--randomly-seed=N` repeats
# an order), modules with `slow` tests first (tests/conftest.py)
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test: setup
	$(PYTEST) tests --ignore=tests/image --durations=15

# tests marked `slow` (subprocess training, Horovod ranks, notebooks, fresh venvs) left out
test-fast: setup
	$(PYTEST) tests --ignore=tests/image -m "not slow"

LINTED := bertlib tests bench notebooks container
lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports

demo: setup
	$(BIN)/python -m bertlib.demo

bench: setup
	$(BIN)/python bench/run_all.py

# The SageMaker training image (container/Dockerfile), built locally on a stand-in for the AWS base
# image (container/standin/; needs root: starts dockerd). Re-runs are fast (Docker's layer cache).
image:
	bash container/standin/build.sh

# The SDK's local mode (instance_type: local, tests/image/test_local_mode.py) runs `docker compose` or
# `docker-compose`: Debian's docker-compose is installed when neither is there (root, as `make image`)
compose:
	@docker compose version 2>/dev/null | grep -qv ' v1\.' || command -v docker-compose >/dev/null || \
	  { echo "installing docker-compose (Debian)"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }

# SageMaker jobs launched by bertlib (moto), run in that image as SageMaker runs them (tests/image).
# in file order (the jobs share one built image and its runner; no shuffling)
test-image: setup image compose
	$(BIN)/python -m pytest -p no:randomly tests/image --durations=10
