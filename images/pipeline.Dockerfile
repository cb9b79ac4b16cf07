# The pipeline image = the pipeline environment: exactly requirements/pipeline.lock.txt plus this project.
# Built by scripts/build-images.sh (or skaffold); the KFP steps run in it
# (each component names its own command); its default command is the `mlops` command line.
#
# The base is pinned by tag. For bit-for-bit rebuilds pin its digest as well:
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm    # -> sha256:...
#   scripts/build-images.sh --build-arg BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# --- builder: compilers and the locked environment in /opt/venv --------------------------------
FROM ${BASE_IMAGE} AS builder
# A few locked packages ship only sources (kfp, pyfarmhash (C++), dill, ...): the compilers stay in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /app
COPY requirements/pipeline.lock.txt requirements/
# Every distribution is checked against the lock's sha256 (--require-hashes), the build tools of
# the source-only packages included: setuptools and wheel come from the lock first, and the
# sources build against them (--no-build-isolation) instead of whatever the index serves that day.
# The lock is complete (every transitive pin), so no resolver runs (--no-deps).
RUN sed -n -e '/^setuptools==/,/# via/p' -e '/^wheel==/,/# via/p' requirements/pipeline.lock.txt | grep -v '# via' \
        > /tmp/build-tools.txt \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/build-tools.txt \
    && /opt/venv/bin/pip install --require-hashes --no-deps --no-build-isolation -r requirements/pipeline.lock.txt
COPY pyproject.toml README.md ./
# What the steps run: every layer of the code (tests/unit/test_layering.py) and its data.
COPY mlops mlops
COPY components components
COPY pipelines pipelines
COPY serving serving
COPY cli cli
COPY configs configs
COPY feature_repo feature_repo
# Editable: the code stays in /app, where it finds configs/ and feature_repo/ beside it.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-index -e . \
    && /opt/venv/bin/python -m compileall -q -j 0 /app /opt/venv/lib

# --- final: the interpreter, the environment and the code; no compilers, no pip downloads -----
FROM ${BASE_IMAGE}
# Bytecode was compiled in the builder; the root file system is read-only in the cluster.
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONFAULTHANDLER=1 \
    PATH=/opt/venv/bin:$PATH HOME=/home/mlops
# The uid/gid the manifests run as (securityContext.runAsUser/runAsGroup 10001).
RUN groupadd --gid 10001 mlops \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/mlops --shell /usr/sbin/nologin mlops
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
USER 10001:10001
# Per build, last: a new commit or date re-runs only these metadata steps, not the copies above.
ARG VERSION=0.1.0
ARG GIT_COMMIT=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/mlops-platform/mlops-platform
LABEL org.opencontainers.image.title="mlops-platform pipeline" \
      org.opencontainers.image.description="KFP pipeline steps: TFX 1.16 family, ML Metadata, kfp 2.13, Feast 0.48" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The code version recorded with every step in ML Metadata.
ENV MLOPS_GIT_COMMIT=${GIT_COMMIT}
# A default command, not an ENTRYPOINT: KFP runners give each step its own command, and
# kfp.local.DockerRunner passes it as the container's arguments, which an entrypoint would swallow
# (`mlops sh -c ...`). `docker run IMAGE` runs `mlops`; `docker run IMAGE mlops pipeline compile`.
CMD ["mlops"]
