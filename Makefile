# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python

# Tests run against the real PostgreSQL and Redis of the machine (see .ci/run).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/school_payments
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
RUN_ADDR ?= 127.0.0.1:8000
# Ops tests (tests/ops) render every kustomize overlay with a real kustomize: pykustomize's wheel
# ships kustomize's own Go library (kustomize api v0.21, Linux x86_64). Its metadata asks for
# Python 3.14, but its code (cffi + that library) runs on 3.11: hence --ignore-requires-python.
# Where it cannot load (another architecture) the tests use `kustomize` or `kubectl kustomize`.
PYKUSTOMIZE ?= pykustomize==0.1.4

.PHONY: run test test-ledger-long fuzz install worker beat relay bench bench-worker bench-hostile bench-outbox bench-staff soak image clean messages

# requirements.txt is what the image runs; requirements-dev.txt adds the test tools.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found (see .python-version)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python $(PYKUSTOMIZE)
	touch $@

install: $(VENV)/.installed

# Development server with demo data: SQLite and inline tasks unless DATABASE_URL/REDIS_URL are set.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py rundemo $(RUN_ADDR)

# The parent pages' translations: extract the English, fill French and Swahili from
# tools/parent_translations.py, compile. Needs Debian's gettext (msgfmt); the compiled .mo files
# are committed, so neither the image nor CI needs it.
MESSAGE_IGNORES := $(foreach d,.venv tests docs staticfiles quickbooks_sync dashboard webhooks fakes providers demo ops directory_client core config tools bench templates/admin,-i "$(d)/*")
messages: install
	$(PY) manage.py makemessages -l fr -l sw $(MESSAGE_IGNORES)
	$(PY) tools/parent_translations.py
	$(PY) manage.py compilemessages -l fr -l sw

test: install
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) APP_ENV=test DB_CONN_MAX_AGE=0 \
		$(PY) -m pytest $(PYTEST_ARGS)

# The property-based tests of hostile input (marker fuzz) with a large budget: FUZZ_EXAMPLES
# examples per test (2,000 by default: about 15,000 webhook bodies, over an hour on 2 cores).
# `make test` runs them too, with a few dozen examples each.
FUZZ_EXAMPLES ?= 2000
fuzz: install
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) APP_ENV=test DB_CONN_MAX_AGE=0 \
		HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -m fuzz -p no:cacheprovider $(PYTEST_ARGS)

# Against Redis (set REDIS_URL and DATABASE_URL first).
worker: install
	$(VENV)/bin/celery -A config worker --loglevel=INFO

beat: install
	$(VENV)/bin/celery -A config beat --loglevel=INFO

# The outbox relay: events to Kafka (KAFKA_BOOTSTRAP_SERVERS) and the schools' endpoints.
relay: install
	$(PY) manage.py outbox_relay

# The image, built with podman on a local Debian bookworm + Python 3.11 base (debootstrap, cached
# in ~/.cache/school-payments): for machines that reach no image registry. Needs root, podman and
# debootstrap (Debian packages). `make test` builds and starts it too (tests/ops/test_image.py).
image: install
	$(PY) tools/local_image.py build

# Not a test: gunicorn on PostgreSQL under load, against a bare "HMAC + one insert" view.
bench: install
	$(PY) bench/webhook_bench.py

# Not a test: one Celery worker applying stored events, against a bare "read a row, update a
# row" task; then 100 deliveries/s for 5 minutes, delivery to "succeeded".
bench-worker: install
	$(PY) bench/worker_bench.py drain --events 10000
	$(PY) bench/worker_bench.py latency --rate 100 --duration 300

# The ledger's order-independence properties with a larger budget than `make test` gives them.
test-ledger-long: install
	$(MAKE) test LEDGER_EXAMPLES=300 PYTEST_ARGS="tests/ledger $(PYTEST_ARGS)"

# Not a test: thousands of mixed deliveries with the worker killed and Redis restarted; three totals.
soak: install
	$(PY) bench/ledger_soak.py

# Not a test: CPU time and peak memory of one request with the worst bodies of the maximum size.
bench-hostile: install
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) bench/hostile_bench.py

# Not a test: the outbox relay's throughput and commit-to-publish delay on Tansu (a Kafka-protocol
# broker); its own database, emptied of outbox rows first.
BENCH_OUTBOX_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/bench_outbox
bench-outbox: install
	psql "$(BENCH_OUTBOX_DATABASE_URL)" -c 'select 1' >/dev/null 2>&1 || \
		psql "$(dir $(BENCH_OUTBOX_DATABASE_URL))postgres" -c 'CREATE DATABASE bench_outbox'
	DATABASE_URL=$(BENCH_OUTBOX_DATABASE_URL) $(PY) bench/outbox_bench.py

# Not a test: the staff pages (admin lists, dashboard, API, CSV export) at a million payments across
# 50 schools, seeded in its own database (dropped and made again unless STAFF_BENCH_ARGS has --keep).
STAFF_BENCH_ARGS ?=
bench-staff: install
	$(PY) bench/staff_bench.py $(STAFF_BENCH_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3
