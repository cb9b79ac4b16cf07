# Two commands do everything on a fresh clone (each builds what is missing first):
#   make demo   the main job, `mlops demo`: the whole loop on embedded defaults (local artifact dir,
#               SQLite MLMD, local Feast); DEMO_ARGS=--full for the whole year
#   make test   the whole test suite, in both environments
SHELL := /bin/bash
PIPELINE_PY := .venv/pipeline/bin/python
SERVING_PY := .venv/serving/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup demo test test-unit lint format lock compile services

setup:
	@scripts/setup-envs.sh all

demo: setup
	@scripts/demo.sh $(DEMO_ARGS)

# Unit + integration tests: one pytest run per environment, side by side (scripts/run-tests.sh);
# conftest.py routes each test to the environment it needs (marker serving_env), so nothing runs
# twice or is skipped silently. TEST_SERIAL=1 runs the two one after the other.
test: setup lint
	@scripts/ensure-services.sh
	@scripts/run-tests.sh $(PYTEST_ARGS)

# ruff (configured in pyproject.toml): lint rules and the one format, checked before any test runs.
lint: setup
	@.venv/pipeline/bin/ruff check --quiet . && .venv/pipeline/bin/ruff format --check --quiet . \
	  || { echo "lint: run \`make format\` (ruff check --fix + ruff format) and review the diff" >&2; exit 1; }

format: setup
	.venv/pipeline/bin/ruff check --fix --quiet . ; .venv/pipeline/bin/ruff format --quiet .

test-unit: setup
	$(PIPELINE_PY) -m pytest -p no:cacheprovider -m "not integration" $(PYTEST_ARGS)
	$(SERVING_PY) -m pytest -p no:cacheprovider -m "not integration" $(PYTEST_ARGS)

compile: setup
	.venv/pipeline/bin/mlops pipeline compile

# Re-resolve the locks (needs uv); the .in files hold the intent, the locks the exact pins with
# their hashes (the images install them with --require-hashes). uv keeps the pins already in a
# lock unless the .in files ask otherwise, so re-running it changes nothing by itself.
LOCK_COMPILE := uv pip compile --generate-hashes --custom-compile-command "make lock" \
  --python-version 3.11 --python-platform x86_64-manylinux_2_36
lock:
	$(LOCK_COMPILE) requirements/pipeline.in -o requirements/pipeline.lock.txt
	$(LOCK_COMPILE) requirements/serving.in -o requirements/serving.lock.txt

services:
	@scripts/ensure-services.sh
