"""Container images of the two environments, pinned in one place (KFP components, manifests).

An image is `<registry>/<name>:<tag>`: registry ghcr.io/mlops-platform and the platform's version
as tag unless told otherwise. `mlops pipeline compile --image-registry R --tag T` sets both for
the compiled IR (e.g. a kind cluster's local registry, a CI commit tag); MLOPS_PIPELINE_IMAGE /
MLOPS_SERVING_IMAGE still replace a whole reference for code that imports the constants.
"""

from __future__ import annotations

import os
import re

from mlops.errors import InvalidInput

VERSION = "0.1.0"
DEFAULT_REGISTRY = "ghcr.io/mlops-platform"
PIPELINE, SERVING = "pipeline", "serving"

# Docker's reference grammar, in short: a tag is 1-128 of [A-Za-z0-9_.-] not starting with . or -;
# a registry/repository path is lowercase components separated by / (a host may carry a :port).
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REGISTRY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


class ImageReferenceInvalid(InvalidInput):
    """An image registry or tag that no container runtime would accept (the message names it)."""


def image(name: str, registry: str | None = None, tag: str | None = None) -> str:
    """`<registry>/<name>:<tag>` of one of the platform's images, checked."""
    registry = (registry or DEFAULT_REGISTRY).rstrip("/")
    tag = tag or VERSION
    if not _REGISTRY.match(registry):
        raise ImageReferenceInvalid(
            f"--image-registry {registry!r}: not a registry (lowercase host[:port]/path, e.g. kind-registry:5000/mlops)"
        )
    if not _TAG.match(tag):
        raise ImageReferenceInvalid(f"--tag {tag!r}: a tag is 1-128 of A-Z a-z 0-9 _ . - and starts with none of . -")
    return f"{registry}/{name}:{tag}"


PIPELINE_IMAGE = os.environ.get("MLOPS_PIPELINE_IMAGE") or image(PIPELINE)
SERVING_IMAGE = os.environ.get("MLOPS_SERVING_IMAGE") or image(SERVING)
