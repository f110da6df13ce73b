# The two commands of the README: `make demo` and `make test`. Both install what is missing first.
#
# `make test` runs the suite in two legs: `make test-host` against this machine's Debian release
# (Debian 12: PostgreSQL 15, pg_partman 4.7, pg_cron 1.4) and `make test-rootfs` against the other
# one (Debian 13: PostgreSQL 17, pg_partman 5.2, pg_cron 1.6) in a root filesystem under build/
# (scripts/rootfs.sh; needs root or sudo). Its virtualenv is build/venv-<suite>.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
HOST_SUITE := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_CODENAME)
OTHER_SUITE ?= $(if $(filter trixie,$(HOST_SUITE)),bookworm,trixie)

.PHONY: setup demo test test-host test-rootfs rootfs-shell lint test-slow test-citus bench

setup:
	@PGRETENTION_VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(PY) -m pgretention.demo

lint: setup
	$(PY) -m ruff check pgretention tests benchmarks migrations
	$(PY) -m mypy pgretention

test: lint
	@bash scripts/test-legs.sh

test-host: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-rootfs:
	@bash scripts/rootfs.sh $(OTHER_SUITE) make test-host VENV=build/venv-$(OTHER_SUITE) \
		PYTEST_ARGS="-o cache_dir=build/pytest-cache-$(OTHER_SUITE) $(PYTEST_ARGS)"

rootfs-shell:
	@bash scripts/rootfs.sh $(OTHER_SUITE) bash

test-slow: setup
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

# needs PGRETENTION_CITUS_DSN: a Citus coordinator with workers (docs/citus.md)
test-citus: setup
	$(PY) -m pytest -m "citus" -rs $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)
