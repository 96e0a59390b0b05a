# Two commands matter: `make run` (the service on SQLite) and `make test` (everything CI runs).
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install lock run screenshots test test-any-hour tools lint typecheck reliability bench-receive bench-process bench-status-api bench-dashboard bench-scale bench-cost postgres clean

# Quiet pip, so one line says what the half minute is for.
$(VENV)/.installed: pyproject.toml
	@echo "Installing the service and its tools into $(VENV) (first run only, 30 s or more)..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@
	@echo "Installed."

install: $(VENV)/.installed

# requirements.lock: every runtime dependency pinned with its hashes, for the image (the
# Dockerfile installs from it). Run after changing [project].dependencies; needs PyPI.
lock: install
	@$(BIN)/pip install --quiet --disable-pip-version-check 'uv>=0.5,<1'
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" \
		--quiet -o requirements.lock

# The service on SQLite; development settings and a local Codat sandbox where none are
# given (scripts/run-dev.sh says which). Anything set in the environment wins.
run: install
	@VENV=$(VENV) exec bash scripts/run-dev.sh

# The README's pictures of the dashboard (docs/dashboard-*.png), taken in Chromium.
screenshots: install tools
	$(BIN)/python -m tests.support.screenshots --out docs

postgres:
	@bash scripts/ensure-postgres.sh

tools:
	@bash scripts/ensure-test-tools.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy app migrations tests bench

test: install postgres tools lint typecheck
	$(BIN)/pytest
	bash scripts/test-at-hours.sh

# Every in-process test at 00:05, 02:30 and 23:55 UTC (the freshness tests alone run in `test`);
# the browser is left out (its pages are the HTTP tests' pages, which do run at those hours).
test-any-hour: install postgres tools
	bash scripts/test-at-hours.sh tests --ignore=tests/reliability \
		--ignore=tests/test_worker_processes.py --ignore=tests/test_dashboard_browser.py

reliability: install postgres
	RELIABILITY_FULL=1 $(BIN)/pytest -m reliability

# Benchmarks (bench/README.md): run one at a time, on a quiet machine.
bench-receive: install postgres
	$(BIN)/python -m bench.receive

bench-process: install postgres
	$(BIN)/python -m bench.process

bench-status-api: install postgres
	$(BIN)/python -m bench.status_api

bench-dashboard: install postgres
	$(BIN)/python -m bench.dashboard

# 1,000 and 10,000 companies (about 15 minutes, a few GB of disk while it runs);
# `python -m bench.scale --large` adds 100,000.
bench-scale: install postgres
	$(BIN)/python -m bench.scale

bench-cost: install
	$(BIN)/python -m bench.cost

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
