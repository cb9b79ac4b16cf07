"""Registry errors: each derives from `RegistryError` (an `MlopsError`) and, where it is one, from the
kind (mlops.errors) that decides its exit code and status; subclasses let callers react to one case."""

from __future__ import annotations

from mlops.errors import InvalidInput, MlopsError, NotFound, Refused, Unavailable


class RegistryError(MlopsError):
    """A registry operation failed; the message names the model, version or file."""


class InvalidRegistryInput(RegistryError, InvalidInput):
    """A malformed model name, selector, version, alias, or registration metadata."""


class RegistryNotFound(RegistryError, NotFound):
    """Unknown model, version or alias (the message lists what exists), or a lineage record missing in MLMD."""


class NotBlessedError(RegistryError, Refused):
    """The model or version is not blessed by the Evaluator: it may not be registered or promoted."""


class NoRollbackTarget(RegistryError, Refused):
    """The alias has no earlier target in its history to go back to."""


class LockTimeout(RegistryError, Unavailable):
    """Another process held the registry lock for longer than the timeout."""


class CorruptRegistryFile(RegistryError):
    """A registry file (aliases.json, history.jsonl) cannot be read or disagrees with the others.

    No kind: neither the caller's input nor a transient failure is at fault, so it maps like the
    platform's own failures (exit 1, HTTP 500). Nothing is written while it stands; the message
    names the file, what is wrong and the repair (`mlops models repair NAME`)."""

    def __init__(self, uri: str, problem: str, repair: str = "") -> None:
        super().__init__(f"{uri}: {problem}" + (f"; {repair}" if repair else ""))
        self.uri = uri
        self.problem = problem
