#!/usr/bin/env bash
# `make test`'s pytest runs: one per environment (conftest.py routes each test to the environment it
# needs). They run side by side: most of either suite waits on child processes, servers and I/O, so
# on two cores the pair takes about as long as the pipeline suite alone. The serving suite's output
# is kept in a file and printed after the pipeline suite's, so neither is interleaved.
# TEST_SERIAL=1 runs them one after the other (e.g. to time one suite alone).
# Usage: scripts/run-tests.sh [pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
PIPELINE_PY=.venv/pipeline/bin/python
SERVING_PY=.venv/serving/bin/python
pytest_in() { "$1" -m pytest -p no:cacheprovider --basetemp="$2" "${@:3}"; }
# One status for both runs. pytest exits 5 when it collected nothing, which is expected of one
# environment when PYTEST_ARGS select only the other's tests; both collecting nothing is an error.
combined() {
  if [[ $1 == 5 && $2 == 5 ]]; then echo 5
  elif [[ $1 == 5 || $1 == 0 ]]; then echo $(( $2 == 5 ? 0 : $2 ))
  else echo "$1"; fi
}
base=$(mktemp -d "${TMPDIR:-/tmp}/mlops-tests.XXXXXX")
if [[ "${TEST_SERIAL:-0}" == 1 ]]; then
  pipeline_status=0 serving_status=0
  pytest_in "$PIPELINE_PY" "$base/pipeline" "$@" || pipeline_status=$?
  pytest_in "$SERVING_PY" "$base/serving" "$@" || serving_status=$?
  rm -rf "$base"
  exit "$(combined "$pipeline_status" "$serving_status")"
fi
serving_log="$base/serving.log"
pytest_in "$SERVING_PY" "$base/serving" "$@" >"$serving_log" 2>&1 &
serving_pid=$!
trap 'kill -TERM "$serving_pid" 2>/dev/null; wait "$serving_pid" 2>/dev/null; rm -rf "$base"; exit 130' INT TERM
echo "tests: the serving environment's suite runs alongside; its output follows the pipeline suite's" >&2
pipeline_status=0
pytest_in "$PIPELINE_PY" "$base/pipeline" "$@" || pipeline_status=$?
serving_status=0
wait "$serving_pid" || serving_status=$?
echo
echo "==================== serving environment (ran alongside) ===================="
cat "$serving_log"
rm -rf "$base"
echo "tests: pipeline environment exit $pipeline_status, serving environment exit $serving_status" >&2
exit "$(combined "$pipeline_status" "$serving_status")"
