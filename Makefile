# Pictor. `make run` starts the appliance; `make test` runs every check. Both set up .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test lint pytest browser-deps services-deps binary test-binary bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(STAMP)

run: setup
	$(BIN)/python main.py serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# The gallery's browser tests drive Debian's chromium (Playwright's own download cannot work
# offline).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The scale-out tests run a real PostgreSQL (tests/pg_server.py starts its own throw-away
# cluster on loopback). The package's own "main" cluster is not wanted: none is created.
services-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the scale-out tests"; \
	  mkdir -p /etc/postgresql-common/createcluster.d && \
	  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/pictor-tests.conf && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

pytest: setup browser-deps services-deps
	$(BIN)/pytest

test: lint pytest

binary: setup
	bash packaging/build.sh

test-binary: binary
	bash packaging/smoke_test.sh

bench: setup services-deps
	$(BIN)/python -m tests.bench

soak: setup
	$(BIN)/python -m tests.soak

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache
