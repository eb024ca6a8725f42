# Every target does its own setup: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

DBT_VENV ?= .venv-dbt
DBT_STAMP := $(DBT_VENV)/.installed

.PHONY: demo test test-fast lint typecheck check report report-screenshot bench clean dbt-env

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# dbt (the `dbt` dev extra) in a virtual environment of its own: its pins clash with mypy's
# (pyproject.toml says why).
$(DBT_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/pip install --quiet --upgrade pip
	$(DBT_VENV)/bin/pip install --quiet -e '.[dbt]'
	touch $(DBT_STAMP)

dbt-env: $(DBT_STAMP)  ## the dbt environment the dbt test (and an analyst) uses

demo: $(STAMP)  ## run the main job against the built-in sandbox, into the embedded SQLite default
	$(BIN)/python -m etl demo

# The report test also needs `chromium` (apt-get install chromium): skipped without it,
# except under CI=true, where .ci/run installs it.
test: $(STAMP) $(DBT_STAMP)  ## lint, type-check and run the whole suite (SQLite and PostgreSQL)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

# The unit tier only (tests/unit, marked `unit` by tests/conftest.py): no database server, no
# CLI processes; well under a minute.
test-fast: $(STAMP)  ## run the unit tier only (pytest -m unit), in well under a minute
	$(BIN)/pytest -m unit -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

report: $(STAMP)  ## write report.html from the database at DATABASE_URL (default: the demo's)
	$(BIN)/python -m etl report --out report.html

report-screenshot: $(STAMP)  ## rebuild docs/report.png (needs chromium)
	$(BIN)/python tools/report_screenshot.py --out docs/report.png

bench: $(STAMP)  ## print the throughput figures the README quotes
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(DBT_VENV) build dist follow_etl.db report.html .pytest_cache .mypy_cache .ruff_cache
