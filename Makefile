# liquidation-aggregator: two commands set everything up on a fresh Debian 12/13 machine (root).
#   make run       provision Redis + TimescaleDB, install, migrate, run collector + app (foreground)
#   make test      the same provisioning, then ruff, mypy and the full pytest suite
#   make services  only provision/start Redis and TimescaleDB and print their URLs
.PHONY: run test services stop-services system-runtime system-test venv venv-dev migrate lint typecheck pytest status bench

VENV := .venv
PY := $(VENV)/bin/python

run: system-runtime venv services migrate
	scripts/run.sh

test: system-test venv-dev services lint typecheck pytest

services: system-runtime
	scripts/services.sh

stop-services:
	scripts/services.sh stop

system-runtime:
	scripts/install-system-packages.sh runtime

system-test:
	scripts/install-system-packages.sh test

venv:
	scripts/install-python.sh runtime
	$(PY) scripts/build_native.py

venv-dev:
	scripts/install-python.sh dev
	$(PY) scripts/build_native.py

migrate:
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m db.migrate

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

pytest:
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

status:
	LIQ_RUN_DIR=$${LIQ_RUN_DIR:-$$PWD/var} $(VENV)/bin/supervisorctl -c supervisord.conf status

bench: venv-dev services
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_parse
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_parse_instructions
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_pipeline
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_db
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_pages
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_export
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_cascades
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_cascade_burst
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_live
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_read
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_market
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_alerts
	set -a; . var/services.env; set +a; PYTHONPATH=. $(PY) -m bench.bench_volume
