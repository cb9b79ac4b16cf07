#!/usr/bin/env bash
# Builds the two images (= the two locked environments) with docker, tagged and labelled.
#   scripts/build-images.sh [pipeline|serving|all] [--push] [extra `docker build` arguments...]
# Environment:
#   REGISTRY  image registry/path            (default ghcr.io/mlops-platform, = mlops/images.py)
#   TAG       image tag                      (default: the project version, = mlops/images.py)
#   VERSION   org.opencontainers.image.version label (default: the project version)
#   SOURCE    org.opencontainers.image.source label  (default: the origin remote, else the project URL)
#   DOCKER    the docker command              (default docker)
# Extra arguments go to every `docker build`, e.g. --build-arg BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:...
# or, on a machine without a registry to pull from, --network host --build-arg BASE_IMAGE=local/python:...
# The commit (GIT_COMMIT, revision label) is the checkout's HEAD, with "-dirty" when the tree has
# uncommitted changes: an image never claims a commit whose code it does not hold.
# Prints one line per image: the reference it built (and pushed with --push).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
project_version() { sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1; }
REGISTRY=${REGISTRY:-ghcr.io/mlops-platform}
REGISTRY=${REGISTRY%/}
VERSION=${VERSION:-$(project_version)}
TAG=${TAG:-$VERSION}
SOURCE=${SOURCE:-$(git config --get remote.origin.url 2>/dev/null || echo https://github.com/mlops-platform/mlops-platform)}

targets=() push=false extra=()
for arg in "$@"; do
  case "$arg" in
    pipeline|serving) targets+=("$arg") ;;
    all) targets+=(pipeline serving) ;;
    --push) push=true ;;
    *) extra+=("$arg") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(pipeline serving)

# Same reference grammar as mlops/images.py, so a bad value fails here with its name, not mid-build.
if ! [[ $REGISTRY =~ ^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]]; then
  echo "build-images: REGISTRY '$REGISTRY' is not a registry (lowercase host[:port]/path)" >&2; exit 2
fi
if ! [[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  echo "build-images: TAG '$TAG' is not a tag (1-128 of A-Z a-z 0-9 _ . -, not starting with . or -)" >&2; exit 2
fi
command -v "$DOCKER" >/dev/null || { echo "build-images: '$DOCKER' not found (install docker or set DOCKER)" >&2; exit 69; }

GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$GIT_COMMIT" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  GIT_COMMIT="$GIT_COMMIT-dirty"
fi
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

for name in "${targets[@]}"; do
  ref="$REGISTRY/$name:$TAG"
  echo "build-images: building $ref (commit $GIT_COMMIT)" >&2
  "$DOCKER" build \
    --file "images/$name.Dockerfile" \
    --tag "$ref" \
    --build-arg "GIT_COMMIT=$GIT_COMMIT" \
    --build-arg "VERSION=$VERSION" \
    --build-arg "CREATED=$CREATED" \
    --build-arg "SOURCE=$SOURCE" \
    ${extra[@]+"${extra[@]}"} \
    . >&2
  if $push; then
    "$DOCKER" push "$ref" >&2
  fi
  echo "$ref"
done
