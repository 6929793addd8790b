# One command per verb, the same locally and in CI. Each sets up .venv first if it needs to.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup sandbox postgres media format lint typecheck test bench ci clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(STAMP)

# A Docker engine that answers and the runtime image, built (or found up to date).
sandbox: $(STAMP)
	scripts/ensure-docker

# Debian's PostgreSQL programs, for the shared store's tests (they start a server of their own).
postgres:
	scripts/ensure-postgres

# Debian's Python documentation (a corpus), ffmpeg and espeak-ng, for the documents' tests.
media:
	scripts/ensure-media

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) sandbox postgres media
	$(BIN)/pytest -q

# Every benchmark runs; then the ones that missed a goal (or failed) are named, and it exits 1.
bench: $(STAMP) sandbox postgres media
	@failed=""; for script in bench/[!_]*.py; do echo "== $$script"; \
		$(BIN)/python $$script || failed="$$failed $$script"; done; \
	if [ -n "$$failed" ]; then echo "== missed a goal or failed:$$failed" >&2; exit 1; fi

ci: lint typecheck test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
