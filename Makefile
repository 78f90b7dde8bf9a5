# Every target installs what it needs first, so each works on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lock test-latest demo test test-repeat lint clean

# Every install is the committed lock, uv.lock, synced exactly: what the lock lists is
# installed at its version, what it does not is removed, and a lock that no longer matches
# pyproject.toml stops the install (`--locked`) instead of being re-resolved. It holds editq
# with its dev tools, the Python client (clients/python/pyproject.toml, a dependency of
# editq: the CLI speaks to the API through it; installed editable from the workspace) and
# the provider simulators (a distribution of their own, simulators/pyproject.toml, that a
# production install does not have). uv itself is pinned
# here (and in the Dockerfile) and installed into the venv from PyPI with pip.
UV_VERSION := 0.13.9
UV         := $(BIN)/uv
SYNC       := $(UV) sync --locked --extra dev --group simulators

$(STAMP): pyproject.toml simulators/pyproject.toml clients/python/pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(SYNC) --quiet
	touch $(STAMP)

install: $(STAMP)

# Refresh the lock: the newest versions pyproject.toml's ranges allow, written to uv.lock
# (commit it once `make test` passes on it).
lock: install
	$(UV) lock --upgrade

# The suite against the newest versions the ranges allow, ignoring the lock, in a venv of
# its own (.venv-latest): the next drift of a dependency is found here, not by a user.
LATEST := .venv-latest
test-latest: install
	rm -rf $(LATEST)
	$(UV) venv --quiet --seed --python $(BIN)/python $(LATEST)
	$(UV) pip install --quiet --python $(LATEST)/bin/python --upgrade -e '.[dev]' -e ./simulators -e ./clients/python
	$(UV) pip list --python $(LATEST)/bin/python --format freeze > $(LATEST)/versions.txt
	@echo "test-latest: $$(wc -l < $(LATEST)/versions.txt) packages, newest allowed (in $(LATEST)/versions.txt)"
	$(LATEST)/bin/pytest -n 2 --dist loadfile --no-loadscope-reorder

demo: install
	$(BIN)/editq demo

# Two workers (this machine has two cores), each taking whole modules, longest first
# (tests/conftest.py): a module's stack is started once, by one worker.
test: install
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder

# Flakiness check: the integration tests RUNS times in a row, each test that failed once named.
RUNS  ?= 3
TESTS ?= tests/integration
test-repeat: install
	$(BIN)/python -m tests.repeat --runs $(RUNS) $(TESTS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(LATEST) demo-output .pytest_cache .mypy_cache .ruff_cache
