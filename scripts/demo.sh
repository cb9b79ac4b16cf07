#!/usr/bin/env bash
# The main job: `mlops demo` (cli/demo.py), the whole loop on embedded defaults (local artifact dir,
# SQLite ML Metadata, local Feast with a SQLite online store; no service needed): ingest -> train
# (kfp.local) -> register -> serve -> replay a month with payload logging -> monitor (drift, CBPE)
# -> drift alert -> retrain -> canary -> compare -> promote or roll back, then a summary.
# Arguments go to `mlops demo` (`make demo DEMO_ARGS=--full`: the whole year). MLOPS_ARTIFACT_ROOT
# moves all of its state. It leaves what the README's command examples read (span 2013-02, the
# Feast online store materialized, a model at staging and production).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/pipeline/bin/mlops demo "$@"
