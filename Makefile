# OpenBank Mesh: every developer and CI entry point.
#   make up     create .venv, install, generate code, run the whole mesh locally
#   make lock   re-resolve requirements/*.lock (hashes) after editing pyproject.toml
#   make test   everything: lint, contract, unit, integration (real Redis + PostgreSQL), e2e
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# e.g. make up UP_ARGS="--replicas 2" (two processes of every service and the gateway)
UP_ARGS ?=

.PHONY: help install gen lint buf-checks test test-servers up clean bench bench-scenarios bench-risk lock

help:
	@grep -E '^#  ' Makefile | sed 's/^#  //'

# Dependencies only from the hash-locked requirements/dev.lock (what CI installs too), then
# the project itself without resolving anything (make lock re-resolves the locks).
$(STAMP): pyproject.toml requirements/dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r requirements/dev.lock
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# After editing pyproject.toml's ranges: re-resolve the locks (runtime: the image's final
# stage; build: + code generation and the wheel's build tools; dev: everything for make).
# pip-tools runs from a throwaway venv; existing pins are kept unless a range forces a change.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $$tools/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock:
	tools=$$(mktemp -d) && $(PYTHON) -m venv $$tools && $$tools/bin/pip install --quiet pip-tools==7.4.1 \
	&& $(PIP_COMPILE) --output-file requirements/runtime.lock pyproject.toml \
	&& $(PIP_COMPILE) --extra gen --build-deps-for wheel --output-file requirements/build.lock pyproject.toml \
	&& $(PIP_COMPILE) --extra dev --build-deps-for editable --output-file requirements/dev.lock pyproject.toml \
	; status=$$?; rm -rf $$tools; exit $$status

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

# Two workers: the suite is mostly waiting on sockets and databases. Whole modules per worker
# (a module-scoped mesh starts once; tests/conftest.py keeps the browser tests together).
test: lint test-servers
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

up: gen
	$(PY) -m meshcli.main up $(UP_ARGS)

# The bar (issue 27): every ratio against targets measured in turns, PASS/FAIL (docs/benchmarks.md).
bench: gen
	bash scripts/ensure_bench_tools.sh
	$(PY) -m bench $(BENCH_ARGS)

# The scenarios without the bar's extra meshes (two payment replicas, preloaded stores).
bench-scenarios: gen
	bash scripts/ensure_bench_tools.sh
	$(PY) -m bench --scenario echo-floor --scenario read --scenario token --scenario pay \
		--scenario mix --scenario limiter --scenario ledger $(BENCH_ARGS)

# The risk decision's CPU per payment with the full shipped rule set (a few seconds).
bench-risk: gen
	$(PY) -m bench.risk

clean:
	rm -rf gen/openbank/*/ gen/*.binpb data .pytest_cache
