# The two commands of the README: `make demo` and `make test`. Both install what is missing first.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint test-slow test-citus bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m pgretention.demo

lint: setup
	$(PY) -m ruff check pgretention tests benchmarks migrations
	$(PY) -m mypy pgretention

test: lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

# needs PGRETENTION_CITUS_DSN: a Citus coordinator with workers (docs/citus.md)
test-citus: setup
	$(PY) -m pytest -m "citus" -rs $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)
