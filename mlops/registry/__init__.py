"""The model registry: blessed models, numbered versions and movable aliases (staging, production).

Split by design between two systems:
  * the artifact store holds everything serving needs (model files, manifest.json, aliases.json),
    readable with plain files and fsspec, WITHOUT ml-metadata: `store.ModelRegistry`;
  * ML Metadata holds the lineage of each registered version (pipeline environment only):
    `lineage.record_registration` / `lineage.lineage_for`, which import mlops.metadata lazily.

`import mlops.registry` therefore works in the serving image, which has no ml-metadata.
"""

from __future__ import annotations

from mlops.registry.aliases import AliasMove
from mlops.registry.errors import (
    CorruptRegistryFile,
    InvalidRegistryInput,
    LockTimeout,
    NoRollbackTarget,
    NotBlessedError,
    RegistryError,
    RegistryNotFound,
)
from mlops.registry.store import ModelRegistry, ModelVersion

__all__ = [
    "AliasMove",
    "CorruptRegistryFile",
    "InvalidRegistryInput",
    "LockTimeout",
    "ModelRegistry",
    "ModelVersion",
    "NoRollbackTarget",
    "NotBlessedError",
    "RegistryError",
    "RegistryNotFound",
]
