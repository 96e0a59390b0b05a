# Two commands matter: `make run` (the service on SQLite) and `make test` (everything CI runs).
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
DEV_SECRET := whsec_Y29kYXQtd2ViaG9va3MtZGV2LW9ubHkh
DEV_TOKEN := dev-status-token

.PHONY: install run test test-any-hour tools lint typecheck reliability bench-receive bench-process bench-status-api bench-cost postgres clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Settings in the environment win; only a missing secret gets the development one.
run: install
	@if [ -z "$$CODAT_WEBHOOK_SECRETS" ]; then \
		export CODAT_WEBHOOK_SECRETS=$(DEV_SECRET); \
		echo "Using the development webhook secret: $(DEV_SECRET)"; \
	fi; \
	if [ -z "$$STATUS_API_TOKENS" ]; then \
		export STATUS_API_TOKENS=$(DEV_TOKEN); \
		echo "Using the development status API token: $(DEV_TOKEN)"; \
	fi; \
	export LOG_FORMAT=$${LOG_FORMAT:-console}; \
	$(BIN)/codat-webhooks migrate && exec $(BIN)/codat-webhooks serve

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

# Every in-process test at 00:05, 02:30 and 23:55 UTC (the freshness tests alone run in `test`).
test-any-hour: install postgres tools
	bash scripts/test-at-hours.sh tests --ignore=tests/reliability \
		--ignore=tests/test_worker_processes.py

reliability: install postgres
	RELIABILITY_FULL=1 $(BIN)/pytest -m reliability

# Benchmarks (bench/README.md): run one at a time, on a quiet machine.
bench-receive: install postgres
	$(BIN)/python -m bench.receive

bench-process: install postgres
	$(BIN)/python -m bench.process

bench-status-api: install postgres
	$(BIN)/python -m bench.status_api

bench-cost: install
	$(BIN)/python -m bench.cost

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
