"""Registry errors. All derive from `RegistryError` (a ValueError) so the CLI can turn any of
them into a one-line message and exit code 1; subclasses let callers react to one case."""

from __future__ import annotations


class RegistryError(ValueError):
    """A registry operation was refused or failed; the message names the model and version."""


class RegistryNotFound(RegistryError, LookupError):
    """Unknown model, version or alias (the message lists what exists)."""


class NotBlessedError(RegistryError):
    """The model or version is not blessed by the Evaluator: it may not be registered or promoted."""


class NoRollbackTarget(RegistryError):
    """The alias has no earlier target in its history to go back to."""


class LockTimeout(RegistryError, TimeoutError):
    """Another process held the registry lock for longer than the timeout."""
