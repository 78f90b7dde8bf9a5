# Every target installs what it needs first, so each works on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-repeat lint clean

# editq with its dev tools, and the provider simulators (a distribution of their own,
# simulators/pyproject.toml, that a production install does not have).
$(STAMP): pyproject.toml simulators/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./simulators
	touch $(STAMP)

install: $(STAMP)

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
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
