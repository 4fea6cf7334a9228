# OpenBank Mesh: every developer and CI entry point.
#   make up     create .venv, install, generate code, run the whole mesh locally
#   make test   everything: lint, contract, unit, integration (real Redis + PostgreSQL), e2e
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install gen lint buf-checks test test-servers up clean bench

help:
	@grep -E '^#  ' Makefile | sed 's/^#  //'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	@touch $(STAMP)

# npm install (not ci): npm's lock files omit other platforms' optional buf binaries.
node_modules/.package-lock.json: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error

# The second, independent client (Node) used by the e2e tests.
examples/node-wallet/node_modules/.package-lock.json: examples/node-wallet/package.json examples/node-wallet/package-lock.json
	npm ci --prefix examples/node-wallet --no-audit --no-fund --loglevel=error

install: $(STAMP) node_modules/.package-lock.json examples/node-wallet/node_modules/.package-lock.json

gen: install
	$(PY) scripts/gen_protos.py

buf-checks: node_modules/.package-lock.json
	bash scripts/buf_checks.sh

lint: gen buf-checks
	$(VENV)/bin/ruff check .

test-servers:
	bash scripts/ensure_test_servers.sh
	bash scripts/ensure_browser.sh

# Two workers: the suite is mostly waiting on sockets and databases.
test: lint test-servers
	$(PY) -m pytest -q -p no:cacheprovider -n 2 -m "not slow" $(PYTEST_ARGS)

up: gen
	$(PY) -m meshcli.main up

bench: gen
	bash scripts/ensure_bench_tools.sh
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf gen/openbank/*/ gen/*.binpb data .pytest_cache
