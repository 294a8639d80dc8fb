# finetune-operator developer entry points. Every target works on a fresh machine:
# it creates the virtualenv and builds the local control plane's binaries on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= operator,trainer,dev
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv binaries crds lint typecheck test test-unit test-e2e cluster demo clean

help: ## List targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed ## Create the virtualenv with the operator, trainer and dev tools

binaries: ## Build kube-apiserver, etcd, kubectl, helm, versitygw, promtool from Go modules (cached)
	@localcluster/build-binaries.sh

# CLUSTER_ARGS: e.g. "--s3 --nodes 3 --gpus-per-node 8 --state-dir .work/cluster"
cluster: venv binaries ## Start the local control plane + node agent until Ctrl-C; prints KUBECONFIG
	$(PY) -m finetune_localcluster up $(CLUSTER_ARGS)

demo: venv binaries ## Local control plane + operator + a real (tiny, CPU) training run, end to end
	$(PY) -m finetune_localcluster.demo

crds: venv ## Regenerate crds/finetunejobs.yaml (and the chart's copy) from the typed schema
	$(PY) -m finetune_api.crd > crds/finetunejobs.yaml
	$(PY) hack/chart/generate.py

lint: venv ## ruff, and the package boundaries (import-linter, pyproject's [tool.importlinter])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv ## mypy on all four packages (api, operator, trainer, localcluster)
	$(VENV)/bin/mypy

# The binaries are a prerequisite here, so an end-to-end test that cannot find them is a
# failure (FTO_REQUIRE_CLUSTER), never a skip counted as a pass.
test: venv binaries ## Everything: lint, types, unit and end-to-end tests (what CI runs)
	$(MAKE) lint typecheck
	FTO_REQUIRE_CLUSTER=1 $(VENV)/bin/pytest

test-unit: venv ## Unit tests only (no control plane)
	$(VENV)/bin/pytest tests/unit

test-e2e: venv binaries ## End-to-end tests on the local control plane
	FTO_REQUIRE_CLUSTER=1 $(VENV)/bin/pytest tests/e2e

clean: ## Remove the virtualenv and caches (not the binary cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

include mk/images.mk
include mk/chart.mk
