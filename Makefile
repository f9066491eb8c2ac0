# opsready: `make demo` runs everything against the reference stack; `make test` runs our own tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OPSREADY := $(BIN)/opsready
ENV ?= local
GATE ?=
STAMP := $(VENV)/.installed

.PHONY: setup verify demo test lint bench system-deps clean

# Idempotent: re-installs only when pyproject.toml changed since the last install.
setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' > $(VENV)/pip.log 2>&1 \
	  || { cat $(VENV)/pip.log; echo 'make setup: pip install failed (log above)'; exit 1; }
	@touch $(STAMP)

# System packages of the reference stack (Prometheus, PostgreSQL server), only when missing.
system-deps:
	@bash stack/install-deps.sh

# ENV=local reads the ports and secrets of a stack started with `opsready stack up` (.stack/).
verify: setup
	@set -a; [ "$(ENV)" != local ] || [ ! -f .stack/secrets.env ] || . ./.stack/secrets.env; set +a; \
	$(OPSREADY) verify --env $(ENV) $(if $(GATE),--gate $(GATE),)

demo: setup system-deps
	@$(BIN)/python -m opsready_stack.demo

# Two xdist workers, each with a reference stack of its own (the `stack` fixture is per
# session, and a worker is a session): a verify waits on its stack about half the time, so
# two overlap on two cores. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: setup system-deps
	@$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS)) tests

# The workflows too: actionlint (syntax, expressions, shell) and zizmor (security; offline,
# so it needs no token).
lint: setup
	@$(BIN)/ruff check src stack checks tests
	@$(BIN)/mypy src/opsready
	@$(BIN)/actionlint .github/workflows/*.yml
	@$(BIN)/zizmor --offline --quiet .github/workflows

bench: setup system-deps
	@$(BIN)/python -m bench $(if $(BENCH_ROWS),--rows $(BENCH_ROWS),)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
