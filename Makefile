# Two commands for users: `make run` (set up, then train the quickstart) and `make test` (set up, then test).
# Set-up is idempotent: a second call finds the stamp and does nothing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.descend-installed
FMNIST  := /usr/share/datasets/fashion-mnist
PGSQL   := /usr/lib/postgresql
TORCH   := torch==2.13.0

.PHONY: setup run test test-slow lint bench clean

CHROMIUM := /usr/bin/chromium

setup: $(STAMP) $(FMNIST) $(CHROMIUM) $(PGSQL)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned (CPU build); the open range in pyproject.toml is then already satisfied
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST ships as a Debian package; installed where apt-get may run, skipped (with a note) elsewhere.
$(FMNIST):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; \
	else echo "note: run 'sudo apt-get install dataset-fashion-mnist' for Fashion-MNIST"; fi

# Headless Chromium for the report tests (driven by playwright, never `playwright install`); skipped elsewhere.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) || \
	  echo "note: could not install chromium; browser tests of the reports will be skipped"; \
	else echo "note: run 'sudo apt-get install chromium' for the browser tests of the reports"; fi

# PostgreSQL (Debian's package) for studies shared by many workers and for their test; the project starts its own
# throw-away server (python -m descend.tune.postgres start), so the package's own cluster is never used.
$(PGSQL):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq postgresql >/dev/null 2>&1)) || \
	  echo "note: could not install postgresql; the PostgreSQL study test will be skipped"; \
	else echo "note: run 'sudo apt-get install postgresql' for studies shared through PostgreSQL"; fi

run: setup
	$(BIN)/descend run examples/quickstart.toml

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow -p no:cacheprovider

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
