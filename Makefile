# Two commands set up and run everything on a fresh Linux machine with Python 3.11:
#   make export   -> installs the pinned toolchain into .venv, exports the default model to every target,
#                    checks parity over a recurrent rollout and benchmarks it (outputs in exports/)
#   make test     -> installs the same toolchain if needed and runs the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXPORT_ARGS ?= --target all --out exports

.PHONY: export test test-slow venv clean

$(STAMP): requirements/ci.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements/ci.txt -e .
	touch $(STAMP)

venv: $(STAMP)

export: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/rvm-export $(EXPORT_ARGS)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) exports
