"""The one error hierarchy of the platform, and the one place it maps to exit codes and statuses.

Every error the platform raises on purpose derives from `MlopsError`; its message is written for
the user: one line naming the file, field, parameter or request part at fault and, where there is
one, what to do. A second base class says what kind of failure it is, and that kind alone decides
the exit code of a command, the HTTP status of a REST answer and the gRPC status of a call:

    kind                    exit  HTTP  gRPC                 meaning
    InvalidInput              2   400   INVALID_ARGUMENT     the caller's input is wrong; retrying it
                                                             unchanged fails again
    NotFound                  1   404   NOT_FOUND            a named thing (model, version, dataset,
                                                             pipeline, file) does not exist
    Refused                   1   409   FAILED_PRECONDITION  well-formed, but the state forbids it
                                                             (not blessed, nothing to roll back to)
    Unavailable              75   503   UNAVAILABLE          a dependency or the server itself cannot
                                                             answer now; retry later (EX_TEMPFAIL)
    MlopsError (no kind)      1   500   INTERNAL             the platform's own step failed

A command catches `MlopsError` once (cli/) and prints its message without a traceback; the model
server maps it to a status once (serving/errors). Code that must react to one case catches the
subclass (e.g. `RegistryNotFound`); nothing catches builtin exceptions to mean "user error".
This module imports nothing, so every layer (and both environments) can use it.
"""

from __future__ import annotations

from dataclasses import dataclass


class MlopsError(Exception):
    """Base of the platform's errors; the message is the user-facing one-line explanation."""

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__

    def __str__(self) -> str:
        return self.message


class InvalidInput(MlopsError):
    """The caller's input (a file, a config field, a parameter, a request part) is wrong."""


class NotFound(MlopsError):
    """A named thing does not exist; the message lists what does where that helps."""


class Refused(MlopsError):
    """A valid request that the current state forbids (e.g. promoting an unblessed model)."""


class Unavailable(MlopsError):
    """A dependency (store, broker, server) cannot answer now; the same request may succeed later."""


@dataclass(frozen=True)
class Status:
    exit_code: int
    http: int
    grpc: str  # the name of a grpc.StatusCode member (this module does not import grpc)


_STATUS_BY_KIND: list[tuple[type[BaseException], Status]] = [
    (InvalidInput, Status(2, 400, "INVALID_ARGUMENT")),
    (NotFound, Status(1, 404, "NOT_FOUND")),
    (Refused, Status(1, 409, "FAILED_PRECONDITION")),
    (Unavailable, Status(75, 503, "UNAVAILABLE")),
    (MlopsError, Status(1, 500, "INTERNAL")),
]
UNEXPECTED = Status(1, 500, "INTERNAL")


def status_of(error: BaseException) -> Status:
    """Exit code, HTTP status and gRPC status of an error: decided by its kind, first match in
    the table above (an error that is both NotFound and Refused is treated as NotFound)."""
    for kind, status in _STATUS_BY_KIND:
        if isinstance(error, kind):
            return status
    return UNEXPECTED
