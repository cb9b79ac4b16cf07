# The serving image = the serving environment: exactly requirements/serving.lock.txt plus this project.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements/serving.lock.txt requirements/
# The lock is complete (every transitive pin), so no resolver runs in the build.
RUN pip install --no-deps -r requirements/serving.lock.txt && python -m compileall -q /usr/local/lib/python3.11
COPY pyproject.toml README.md ./
# What the server, stream consumer and edge tools run: the core, serving and the command line.
COPY mlops mlops
COPY serving serving
COPY cli cli
COPY configs configs
COPY feature_repo feature_repo
RUN pip install --no-deps -e .
# Code version recorded with every step in ML Metadata (skaffold passes the commit).
ARG GIT_COMMIT=unknown
ENV MLOPS_GIT_COMMIT=${GIT_COMMIT}
ENTRYPOINT ["mlops"]
