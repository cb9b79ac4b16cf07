#!/usr/bin/env bash
# Builds the two locked environments (= the two container images) when missing or stale.
#   .venv/pipeline : TFX 1.16 family, ml-metadata, kfp 2.13, feast 0.48, alibi-detect (protobuf 4)
#   .venv/serving  : tensorflow-cpu 2.21, kserve 0.21, feast 0.67 (protobuf 6)
# Idempotent: a stamp holding the hash of lock + pyproject skips a fresh environment in milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

RECIPE=2

ensure_uv() {
  if command -v uv >/dev/null; then UV=$(command -v uv); return; fi
  if [ -x .venv/tools/bin/uv ]; then UV=.venv/tools/bin/uv; return; fi
  echo "setup: installing uv into .venv/tools" >&2
  "$PY" -m venv .venv/tools && .venv/tools/bin/pip install -q uv && UV=.venv/tools/bin/uv || UV=""
}

build_env() {  # name
  local name=$1 lock=requirements/$1.lock.txt venv=.venv/$1
  local want_lock want_project
  # The recipe version is part of the stamp: changing how envs are built rebuilds them.
  want_lock=$( (cat "$lock"; echo "recipe: $RECIPE") | sha256sum | cut -c1-16)
  want_project=$(sha256sum < pyproject.toml | cut -c1-16)
  # A half-built env has no stamp, so an interrupted build is redone from scratch.
  if [ "$(cat "$venv/.lock-stamp" 2>/dev/null)" != "$want_lock" ]; then
    echo "setup: building $venv from $lock" >&2
    local t0=$SECONDS
    rm -rf "$venv"
    if [ -n "${UV:-}" ]; then
      # --seed: users and kfp tooling expect pip inside the env.
      "$UV" venv -q --seed --python "$PY" "$venv"
      # Bytecode at install time: PYTHONDONTWRITEBYTECODE may be set (it is on CI machines), and
      # without .pyc files every process re-compiles TF/Feast/TFX sources (6-12 s per import).
      "$UV" pip install -q --compile-bytecode --python "$venv/bin/python" -r "$lock"
    else
      "$PY" -m venv "$venv"
      "$venv/bin/pip" install -q -r "$lock"
      "$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null || true
    fi
    echo "$want_lock" > "$venv/.lock-stamp"
    rm -f "$venv/.project-stamp"
    echo "setup: $venv ready in $((SECONDS - t0)) s" >&2
  fi
  if [ "$(cat "$venv/.project-stamp" 2>/dev/null)" != "$want_project" ]; then
    # Editable and without deps: the lock file is the whole truth about third-party versions.
    if [ -n "${UV:-}" ]; then
      "$UV" pip install -q --python "$venv/bin/python" --no-deps -e .
    else
      "$venv/bin/pip" install -q --no-deps -e .
    fi
    echo "$want_project" > "$venv/.project-stamp"
  fi
}

ensure_uv
case "${1:-all}" in
  pipeline|serving) build_env "$1" ;;
  all) build_env pipeline; build_env serving ;;
  *) echo "usage: $0 [pipeline|serving|all]" >&2; exit 2 ;;
esac
