# Pictor. `make run` starts the appliance; `make test` runs every check. Both set up .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test lint pytest browser-deps services-deps binary test-binary release bench \
	soak clean

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

# The executable is built in a Debian 11 root so that it runs on glibc 2.28 and later; the root
# and the CPython built there are cached in /var/cache/pictor-build (first build: minutes).
binary: setup
	bash packaging/build.sh

# The glibc check, the smoke test on this machine and in Debian 11, the old-SQLite refusal.
test-binary: binary
	bash packaging/test_binary.sh

VERSION = $(shell sed -nE 's/^__version__ = "(.*)"/\1/p' appliance/__init__.py)
RELEASE = dist/pictor-$(VERSION)-linux-x86_64

# The download: the executable under its versioned name, and its SHA-256 in sha256sum's format.
release: binary
	$(BIN)/python packaging/glibc_check.py --max 2.28 dist/pictor
	cp dist/pictor $(RELEASE)
	cd dist && sha256sum $(notdir $(RELEASE)) > $(notdir $(RELEASE)).sha256
	@cat $(RELEASE).sha256

bench: setup services-deps
	$(BIN)/python -m tests.bench

soak: setup
	$(BIN)/python -m tests.soak

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache
