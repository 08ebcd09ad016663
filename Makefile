# ocppd developer entry points. Everything runs from a venv that `make venv` creates.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all venv demo test test-fast bench bench-compare lint deb deb-check system-check clean

all: test

venv: $(VENV)/.done

$(VENV)/.done: pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh $(VENV)

## The main job: the daemon on the simulator against a local central system, charging a car.
demo: venv
	$(PY) scripts/demo.py

## The whole test suite, as CI runs it.
test: venv
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## Without the slow scenarios (kill test, long soaks).
test-fast: venv
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

## Benchmarks: prints a table and writes bench-results.json.
bench: venv
	$(PY) scripts/bench.py --json bench-results.json

# before and after in one run: REF's benchmark, then this checkout's (scripts/bench_compare.py)
bench-compare: venv
	$(PY) scripts/bench_compare.py $(REF) --json bench-compare.json

lint: venv
	$(VENV)/bin/ruff check ocppd tests scripts
	$(VENV)/bin/mypy ocppd
	$(VENV)/bin/lint-imports --no-cache

## Debian package (needs dpkg-dev, debhelper, dh-python: scripts/deb.sh installs them).
deb:
	scripts/deb.sh build

## Build, lintian, and install + test in clean Debian 12 and 13 chroots.
deb-check:
	scripts/deb.sh check

## The installed package under a real systemd: boots clean Debian 12 and 13 containers
## (systemd-nspawn), apt installs dist/*.deb and checks unit, status, watchdog, upgrade, purge.
## Needs root, systemd-container and debootstrap; never part of `make test`.
## SYSTEM_CHECK_ARGS=--arm64 adds an install and a session in an arm64 root (qemu-user-static).
SYSTEM_SUITES ?= bookworm trixie
SYSTEM_CHECK_ARGS ?=
system-check: venv deb
	$(PY) scripts/system_check.py --suites $(SYSTEM_SUITES) $(SYSTEM_CHECK_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache bench-results.json demo-run
