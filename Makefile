# The README's two commands: `make demo` and `make test`. Both install what
# they need first (Debian packages, .venv, the sandboxed Asterisk), idempotently.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap demo test lint unit e2e bench bench-calls bench-latency bench-pool clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m controller demo

test: bootstrap lint
	$(PY) -m pytest

lint: bootstrap
	$(VENV)/bin/ruff check controller tests asterisk bench
	$(VENV)/bin/ruff format --check controller tests asterisk bench
	$(VENV)/bin/mypy

unit: bootstrap
	$(PY) -m pytest tests/unit tests/http

e2e: bootstrap
	$(PY) -m pytest tests/e2e

bench: bootstrap
	$(PY) bench/bench_media.py
	$(PY) bench/bench_realtime.py
	$(PY) bench/bench_hostile.py
	$(PY) bench/bench_resample.py
	$(PY) bench/bench_memory.py
	$(PY) bench/bench_scale.py

# These place real calls through the sandboxed Asterisk (root).
bench-calls: bootstrap
	$(PY) bench/bench_calls.py

bench-latency: bootstrap
	$(PY) bench/bench_latency.py

bench-pool: bootstrap
	$(PY) bench/bench_ari_transport.py
	$(PY) bench/bench_pool.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-out
