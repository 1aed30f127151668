# imagehook: `make run` starts the service, `make test` runs every check, `make bench` measures it.
# Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_TEST_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
# The test tiers that use a database; the unit and emulator tiers never do, so they run once, on SQLite.
DATABASE_TIERS := tests/db tests/e2e
# CI must never skip the PostgreSQL pass; on a laptop without PostgreSQL it is skipped loudly.
REQUIRE_POSTGRES ?= $(CI)
# Test files run on this many workers, each with a database of its own; most tests wait on servers, not the CPU.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: install browser run test lint fmt test-sqlite test-postgres emulator bench

$(BIN)/imagehook: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The dashboard's test drives a real headless browser: Debian's Chromium (as root, as on CI).
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

install: $(BIN)/imagehook

run: install
	$(BIN)/imagehook migrate
	$(BIN)/imagehook serve $(if $(KIEAI_API_KEY),,--emulator)

emulator: install
	$(BIN)/imagehook emulator

test: lint test-sqlite test-postgres

lint: install
	$(BIN)/ruff check app migrations tests bench
	$(BIN)/ruff format --check app migrations tests bench

fmt: install
	$(BIN)/ruff check --fix app migrations tests bench
	$(BIN)/ruff format app migrations tests bench

test-sqlite: install browser
	$(PYTEST)

test-postgres: install browser
	@if $(BIN)/python -m tests.support.pg_available "$(PG_TEST_URL)"; then \
		echo "== PostgreSQL pass: $(PG_TEST_URL)"; \
		IMAGEHOOK_TEST_DATABASE_URL="$(PG_TEST_URL)" $(PYTEST) $(DATABASE_TIERS); \
	elif [ -n "$(REQUIRE_POSTGRES)" ]; then \
		echo "PostgreSQL is required but not reachable at $(PG_TEST_URL)"; exit 1; \
	else \
		echo "!! PostgreSQL not reachable at $(PG_TEST_URL): PostgreSQL pass NOT run"; \
	fi

# SQLite and PostgreSQL ($(PG_TEST_URL)); starts every server itself and installs wrk if missing.
# Options: make bench BENCH_ARGS="--quick --backend sqlite --runs 1 --duration 5 --json out.json"
bench: install
	$(BIN)/python -m bench --pg-url "$(PG_TEST_URL)" $(BENCH_ARGS)
