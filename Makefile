# fhirflow — every target sets itself up on first use (virtualenv, Python and npm dependencies).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080
PYTEST_ARGS ?=

.PHONY: serve test lint typecheck bench setup clean generate

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[aws,dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/fhirflow serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	scripts/in-netns $(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench

# Regenerate the committed data files from ../shared (developers only; the product never reads ../shared).
generate: $(STAMP)
	$(PY) tools/gen_r4_schema.py
	$(PY) tools/gen_search_registry.py

clean:
	rm -rf $(VENV) .fhirflow .pytest_cache .mypy_cache .ruff_cache
