"""Aliases (staging, production, ...) of one registered model, and the history of their moves.

    <registry>/<name>/aliases.json    {"production": 2, "staging": 3}   what readers (serving) use
    <registry>/<name>/history.jsonl   one JSON object per move, never edited: the source of truth
    <registry>/<name>/aliases.lock    the flock target on local file systems (see locking.py)

Every change is a read-modify-write under an exclusive lock: read the history, decide, write the
history with one more entry, then replace aliases.json with the state replayed from it. Both
files are replaced atomically (temp file + rename locally, one object put on object stores), so
readers never see a torn file and object stores, which cannot append, use the same code. The
history is written first: a crash between the two writes leaves the move in the history and the
previous (consistent) aliases.json, which the next update rewrites from the history.

Rollback is an undo: replaying the history keeps a stack of targets per alias (a move pushes, a
rollback pops), so after promoting 1, 2, 3 two rollbacks land on 2 then 1, not back on 3.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable

from mlops import storage
from mlops.config import join_uri
from mlops.registry import locking
from mlops.registry.errors import NoRollbackTarget, RegistryError

ALIASES_FILE = "aliases.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "aliases.lock"


def default_actor() -> str:
    """Who moves an alias: $MLOPS_USER (set by CI or the pipeline), else user@host."""
    if os.environ.get("MLOPS_USER"):
        return os.environ["MLOPS_USER"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # containers often run as a uid without a passwd entry
        user = f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias. `seq` is its 1-based position in the history; None when the request
    changed nothing (the alias already pointed there) and so nothing was recorded."""

    seq: int | None
    alias: str
    from_version: int | None
    to_version: int
    action: str  # "register" | "promote" | "rollback"
    at: str
    by: str
    reason: str

    @property
    def recorded(self) -> bool:
        return self.seq is not None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "alias": self.alias, "from": self.from_version, "to": self.to_version,
                "action": self.action, "at": self.at, "by": self.by, "reason": self.reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "AliasMove":
        return cls(d["seq"], d["alias"], None if d.get("from") is None else int(d["from"]), int(d["to"]),
                   d["action"], d["at"], d.get("by", ""), d.get("reason", ""))


def replay(history: list[AliasMove]) -> dict[str, list[int]]:
    """alias -> stack of targets (last = current)."""
    stacks: dict[str, list[int]] = {}
    for move in history:
        stack = stacks.setdefault(move.alias, [])
        if move.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != move.to_version:  # tolerate a hand-edited history
                stack.append(move.to_version)
        else:
            stack.append(move.to_version)
    return stacks


class AliasBook:
    """The aliases of one model, under `model_uri` (<registry>/<name>)."""

    def __init__(self, model_uri: str, *, lock_timeout_s: float = 60.0):
        self.aliases_uri = join_uri(model_uri, ALIASES_FILE)
        self.history_uri = join_uri(model_uri, HISTORY_FILE)
        self.lock_uri = join_uri(model_uri, LOCK_FILE)
        self.lock_timeout_s = lock_timeout_s

    # ---- reading (no lock: both files are only ever replaced whole) ------------------------
    def current(self) -> dict[str, int]:
        if not storage.exists(self.aliases_uri):
            return {}
        return {alias: int(v) for alias, v in storage.read_json(self.aliases_uri).items()}

    def history(self) -> list[AliasMove]:
        if not storage.exists(self.history_uri):
            return []
        lines = storage.read_bytes(self.history_uri).decode().splitlines()
        return [AliasMove.from_json(json.loads(line)) for line in lines if line.strip()]

    # ---- moving (under the lock) -----------------------------------------------------------
    def move(self, alias: str, to_version: int, *, action: str, reason: str = "", by: str | None = None) -> AliasMove:
        """Points `alias` at `to_version`. A no-op (returned with seq None) if it already does."""
        def decide(stacks: dict[str, list[int]]) -> tuple[int | None, int]:
            stack = stacks.get(alias, [])
            return (stack[-1] if stack else None), to_version

        return self._update(alias, action, reason, by, decide)

    def rollback(self, alias: str, *, reason: str = "", by: str | None = None,
                 check: Callable[[int], None] | None = None) -> AliasMove:
        """Moves `alias` back to its target before the current one; `check(version)` may veto."""
        def decide(stacks: dict[str, list[int]]) -> tuple[int | None, int]:
            stack = stacks.get(alias, [])
            if len(stack) < 2:
                where = f"it points at version {stack[-1]} since its first move" if stack else "it was never set"
                raise NoRollbackTarget(f"{self._model()}@{alias}: nothing to roll back to: {where}")
            if check is not None:
                check(stack[-2])
            return stack[-1], stack[-2]

        return self._update(alias, "rollback", reason, by, decide)

    def _update(self, alias: str, action: str, reason: str, by: str | None,
                decide: Callable[[dict[str, list[int]]], tuple[int | None, int]]) -> AliasMove:
        at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        by = by or default_actor()
        with locking.exclusive(self.lock_uri, timeout_s=self.lock_timeout_s):
            history = self.history()
            stacks = replay(history)
            from_version, to_version = decide(stacks)
            if from_version == to_version and action != "rollback":
                self._write_aliases(stacks)  # repairs aliases.json after a crash between writes
                return AliasMove(None, alias, from_version, to_version, action, at, by, reason)
            move = AliasMove(len(history) + 1, alias, from_version, to_version, action, at, by, reason)
            history.append(move)
            body = "".join(json.dumps(m.to_json(), sort_keys=True) + "\n" for m in history)
            storage.write_bytes_atomic(self.history_uri, body.encode())
            self._write_aliases(replay(history))
            return move

    def _write_aliases(self, stacks: dict[str, list[int]]) -> None:
        state = {alias: stack[-1] for alias, stack in sorted(stacks.items()) if stack}
        if not storage.exists(self.aliases_uri) or state != self.current():
            storage.write_json_atomic(self.aliases_uri, state)

    def _model(self) -> str:
        return self.aliases_uri.rstrip("/").split("/")[-2]


def check_alias_name(alias: str) -> None:
    """Aliases are lower-case words that cannot be mistaken for a version number or a keyword."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", alias or "") or alias == "latest":
        raise RegistryError(f"invalid alias {alias!r}: use a lower-case word such as 'production' or 'staging' "
                            "('latest' and numbers are reserved for versions)")
