"""ML Metadata errors, under the platform's one base (mlops.errors). No MLMD import: callers in
either environment can catch them."""

from __future__ import annotations

from mlops.errors import InvalidInput, MlopsError, NotFound, Refused


class MetadataError(MlopsError):
    """A metadata operation failed; the message names the run, component or artifact."""


class MetadataConfigError(MetadataError, InvalidInput):
    """The `metadata:` config section cannot be used (backend, SQLite path, password variable)."""


class MetadataNotFound(MetadataError, NotFound):
    """No artifact, execution or context with that id or name."""


class MetadataConflict(MetadataError, Refused):
    """The record would contradict what is recorded (e.g. a run id of another pipeline)."""


class UnknownArtifactType(MetadataError, InvalidInput):
    """An artifact type name the platform does not define (the message lists the known ones)."""
