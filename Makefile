# The two commands: `make up` (install, migrate, demo data, start everything) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Tests use the real services; CI sets these, and these defaults match a developer machine.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/portal
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

# Local data; the secret key of local runs is made once and kept there (settings read it).
VAR_DIR ?= $(or $(PORTAL_VAR_DIR),var)

.PHONY: install up test test-fast test-slow lint format chromium bench-clone bench-pipeline bench-pages clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

up: install $(VAR_DIR)/secret_key
	$(PY) manage.py run_local

$(VAR_DIR)/secret_key:
	mkdir -p $(VAR_DIR)
	umask 077 && $(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

# Chromium for the browser tests comes from Debian (Playwright's own download cannot work offline).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "WARNING: chromium is not installed and cannot be installed here: browser tests will be skipped"; fi; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy portal accounts_app pipelines

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Everything but the chaos tests that wait out the product's default timings (make test-slow).
test: install chromium lint
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)}" \
	$(PY) -m pytest -m "not slow"

test-slow: install
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)}" \
	$(PY) -m pytest -m slow

# The fast loop: every test that needs no worker, Terraform or moto (the database only).
test-fast: install
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)}" \
	$(PY) -m pytest -m "not integration and not slow"

bench-clone: install
	$(PY) manage.py bench_clone --rows 1000000

# A real worker on the configured database and broker (PostgreSQL and Redis, as for tests).
bench-pipeline: install
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$(TEST_BROKER_URL)}" \
	$(PY) manage.py bench_pipeline --runs 100

# Builds its data set in a database of its own on that server, and drops it.
bench-pages: install
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	$(PY) manage.py bench_pages --scale 10

clean:
	rm -rf var/work test-artifacts
