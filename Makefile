# Two commands set up and run everything on a fresh Linux machine with Python 3.11:
#   make export   -> installs the pinned toolchain into .venv, exports the default model to every target,
#                    checks parity over a recurrent rollout and benchmarks it (outputs in exports/)
#   make test     -> installs the same toolchain (and web/'s npm packages) if needed and runs the test suite
#                    (CI runs .ci/run: it also installs Chromium and Node.js when missing, as root)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXPORT_ARGS ?= --target all --out exports

WEB_STAMP := web/node_modules/.installed

.PHONY: export test test-slow venv web-deps browser clean

$(STAMP): requirements/ci.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements/ci.txt -e .
	touch $(STAMP)

venv: $(STAMP)

# The web target's npm packages (onnxruntime-web, playwright-core), pinned by web/package-lock.json. Without Node.js
# the web tests skip with the reason (CI's .ci/run makes them required instead).
$(WEB_STAMP): web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd web && npm ci --ignore-scripts --no-audit --no-fund && touch node_modules/.installed; \
	else echo "make: npm not found: the web target's tests will skip (install Node.js >= 18)"; fi

web-deps: $(WEB_STAMP)

# Chromium for the web target's browser tests (Debian/Ubuntu; as root, only when missing). .ci/run does the same.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
		else echo "make: chromium is missing: sudo apt-get install -y chromium (the web tests skip until then)"; fi

export: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/rvm-export $(EXPORT_ARGS)

test: $(STAMP) web-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) web-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) exports
