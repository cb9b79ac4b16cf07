"""ML Metadata (MLMD): the platform's system of record for lineage.

`types` (the type tables) imports without ml-metadata; the store names below are loaded on first
use, so `import mlops.metadata` also works in images without ml-metadata (e.g. serving).
"""

from __future__ import annotations

from mlops.metadata.types import (  # noqa: F401  (re-exported: __all__ below)
    ARTIFACT_TYPES,
    CONTEXT_TYPES,
    EXECUTION_TYPE,
    EXECUTION_TYPES,
    qualify,
)

_STORE_NAMES = {
    "ArtifactRecord",
    "ArtifactRef",
    "ContextRecord",
    "ExecutionRecord",
    "LineageStep",
    "MetadataStore",
    "RecordedExecution",
    "connection_config",
    "open_store",
}

__all__ = sorted(_STORE_NAMES | {"ARTIFACT_TYPES", "CONTEXT_TYPES", "EXECUTION_TYPE", "EXECUTION_TYPES", "qualify"})


def __getattr__(name: str):
    if name in _STORE_NAMES:
        from mlops.metadata import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
