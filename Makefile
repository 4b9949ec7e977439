# The two commands of the README: `make run` and `make test`. Everything they need is installed
# here, from PyPI and Debian's packages, so a fresh machine needs nothing by hand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test test-fast install install-dev services system-packages database lint pytest typecheck lock clean chaos fuzz-api

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Both from hashed locks (`make lock`), as the image installs: every package pinned and checked
# against its hash, nothing resolved at install time (`pip check` catches a lock missing one).
# The dev lock holds the runtime lock's packages at the same versions, plus the tools.
PIP_INSTALL_LOCK = $(BIN)/pip install -q --require-hashes --no-deps

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(PIP_INSTALL_LOCK) -r requirements.txt
	$(BIN)/pip check -q
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(PIP_INSTALL_LOCK) -r requirements-dev.txt
	$(BIN)/pip check -q
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

services:
	scripts/ensure-services.sh

# Debian packages the tests need (promtool, ...): installed only when missing.
system-packages:
	scripts/install-system-packages.sh

database: install services
	$(BIN)/python scripts/ensure_database.py
	$(BIN)/python manage.py migrate --no-input

# The background worker (durable jobs, recovery passes, the outbox exporter) runs beside
# gunicorn and stops with it. When gunicorn ends (Ctrl-C, SIGTERM, `manage.py stop`),
# `manage.py stop` stops what is left: the worker, with its report, and the BigQuery emulator
# if this run started it (recorded in OMK_RUN_DIR). Nothing of the run stays up.
RUN_DIR = $${OMK_RUN_DIR:-/tmp/omk}
run: database bigquery-local
	@echo "Serving on http://127.0.0.1:$(PORT)"
	export DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-settings.local}; \
	$(BIN)/python manage.py worker & \
	trap '$(BIN)/python manage.py stop 2>/dev/null || true' EXIT; \
	PORT=$(PORT) $(BIN)/gunicorn -c omk/gunicorn.conf.py

# A local BigQuery (bqemulator, a dev package) on 127.0.0.1:9050 and the
# event tables in it, so a local run exports analytics events for real.
.PHONY: bigquery-local
bigquery-local: install-dev database
	BQEMULATOR_RECORD=$(RUN_DIR)/bqemulator.pid scripts/bqemulator.sh
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-settings.local} $(BIN)/python manage.py bigquery_setup

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPECHECK_DIRS)

# The caller's DJANGO_SETTINGS_MODULE, DATABASE_URL and REDIS_URL never reach the test run: it is
# settings.test (also --ds in pyproject.toml) on this machine's PostgreSQL and Redis, with the
# test database and Redis db named by TEST_DATABASE_NAME and REDIS_TEST_DB (those pass through).
# The processes the tests start get their own from the service_env fixture.
TEST_ENV = env -u DJANGO_SETTINGS_MODULE -u DATABASE_URL -u REDIS_URL

# Two test processes (pytest-xdist): most of the suite waits for the servers and processes it
# starts, not for a core. Each process has a database and a Redis db of its own (settings/test.py).
# PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

pytest: install-dev services system-packages
	$(TEST_ENV) $(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint pytest

# The inner loop: every test but those marked slow (real servers, nested runs), and no lint.
test-fast: install-dev services system-packages
	$(TEST_ENV) $(BIN)/pytest -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

# Not part of `make test`: the schemathesis test with random inputs, 250 per operation and mode
# (about 13,000 requests, 4 minutes). A failure prints the seed that replays it.
fuzz-api: install-dev services
	SCHEMATHESIS_EXAMPLES=$${SCHEMATHESIS_EXAMPLES:-250} SCHEMATHESIS_RANDOMIZED=1 \
		$(TEST_ENV) $(BIN)/pytest tests/governance/test_schemathesis.py -s $(PYTEST_ARGS)

# mypy with django-stubs (configuration in pyproject.toml) on the application packages and the
# chaos harness that exist in this checkout; `make lint` (so `make test`) runs it too.
TYPECHECK_DIRS = $(wildcard core lifecycle governance hive accounts omk settings chaos)

typecheck: install-dev
	$(BIN)/mypy $(TYPECHECK_DIRS)

# Regenerate the hashed locks from requirements.in and requirements-dev.in (packages from PyPI,
# for CPython 3.11 on Linux x86-64, the image's platform). The dev lock first; the runtime lock is
# then held to its versions, so the image runs exactly what the tests ran. Versions already locked
# stay: LOCK_ARGS=--upgrade, or LOCK_ARGS="--upgrade-package NAME", moves them.
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" $(LOCK_ARGS)

lock: install-dev
	$(UV_COMPILE) requirements-dev.in -o requirements-dev.txt
	$(UV_COMPILE) --constraint requirements-dev.txt requirements.in -o requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# The chaos harness: autoscaling, kills and restarts under load, with an invariant report.
DURATION ?= 60
SEED ?= 1
chaos: install-dev system-packages
	$(BIN)/python -m chaos --duration $(DURATION) --seed $(SEED)
