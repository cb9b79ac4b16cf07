"""Aliases (staging, production, ...) of one registered model, and the history of their moves.

    <registry>/<name>/history.jsonl   one JSON object per move, in order (seq 1, 2, 3...)
    <registry>/<name>/aliases.json    {"aliases": {"production": 2, "staging": 3}, "history_seq": 5}
    <registry>/<name>/aliases.lock    the flock target on local file systems (see locking.py)

A move is committed by ONE atomic write: aliases.json, which names the current targets and how
many moves of the history they include (`history_seq`). Under an exclusive lock, a writer

  1. reads and checks both files (nothing is written if either is unreadable or they disagree),
  2. replaces history.jsonl with its committed moves plus the new one (a write-ahead record),
  3. replaces aliases.json with the state replayed from that history and the new `history_seq`:
     the commit point. (The first move of a model writes an empty aliases.json before step 2,
     so a history without aliases.json is always damage, never a move in flight.)

Both files are replaced whole (temp file + rename locally, one object put on object stores:
no appends, so object stores use the same code), so a reader never sees a torn file. A writer
that dies between 2 and 3 (kill -9) leaves aliases.json as it was and a history line past
`history_seq`: readers ignore it and the next writer drops it, so the failed move never takes
effect. An error between 2 and 3 also puts history.jsonl back byte for byte. Readers take
aliases.json first, then the history: its committed part only ever grows, so a concurrent
writer cannot make the two disagree (a reader that found no aliases.json and then a history has
raced the model's first move, and reads both again).

Invariant, checked on every read: aliases.json == replay(history[:history_seq]), and every
alias names an existing version. A file that breaks it (hand edits, a foreign tool, a damaged
disk) makes every command fail with `CorruptRegistryFile` naming the file; `repair` rebuilds
aliases.json from the history.

Rollback is an undo: replaying the history keeps a stack of targets per alias (a move pushes, a
rollback pops), so after promoting 1, 2, 3 two rollbacks land on 2 then 1, not back on 3.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops import storage
from mlops.config import join_uri
from mlops.registry import locking
from mlops.registry.errors import CorruptRegistryFile, InvalidRegistryInput, NoRollbackTarget

ALIASES_FILE = "aliases.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "aliases.lock"
ACTIONS = ("register", "promote", "rollback")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]*")


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
        return {
            "seq": self.seq,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "action": self.action,
            "at": self.at,
            "by": self.by,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AliasMove:
        return cls(
            d["seq"],
            d["alias"],
            None if d.get("from") is None else int(d["from"]),
            int(d["to"]),
            d["action"],
            d["at"],
            d.get("by", ""),
            d.get("reason", ""),
        )


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


def current_of(history: list[AliasMove]) -> dict[str, int]:
    """The alias -> version map a history leads to."""
    return {alias: stack[-1] for alias, stack in sorted(replay(history).items()) if stack}


@dataclass(frozen=True)
class AliasState:
    """The committed state of one model's aliases: the targets and the moves that led there."""

    aliases: dict[str, int]
    history: list[AliasMove]


class AliasBook:
    """The aliases of one model, under `model_uri` (<registry>/<name>). `version_exists(n)` says
    whether version n is complete; aliases naming a version that is not make the state corrupt."""

    def __init__(
        self,
        model_uri: str,
        *,
        lock_timeout_s: float = 60.0,
        version_exists: Callable[[int], bool] | None = None,
        versions: Callable[[], list[int]] | None = None,
    ):
        self.name = model_uri.rstrip("/").split("/")[-1]
        self.aliases_uri = join_uri(model_uri, ALIASES_FILE)
        self.history_uri = join_uri(model_uri, HISTORY_FILE)
        self.lock_uri = join_uri(model_uri, LOCK_FILE)
        self.lock_timeout_s = lock_timeout_s
        self._version_exists = version_exists
        self._versions = versions

    @property
    def repair_hint(self) -> str:
        return f"run `mlops models repair {self.name}` to rebuild it from {HISTORY_FILE}"

    # ---- reading (no lock: both files are only ever replaced whole) ------------------------
    def load(self, *, check_targets: bool = True) -> AliasState:
        """The committed state, checked; raises CorruptRegistryFile if a file is unreadable, the two
        disagree, or (with `check_targets`) an alias names a missing version."""
        committed = self._read_committed_seq()  # aliases.json first: see the module docstring
        moves = self._read_history()
        if committed is None and moves and storage.exists(self.aliases_uri):
            # aliases.json appeared between the two reads: the model's first move ran in between
            # (it writes aliases.json before any history). Read both again, in the same order.
            committed = self._read_committed_seq()
            moves = self._read_history()
        if committed is None:  # never committed a move (the first move writes aliases.json before any history)
            if moves:
                raise CorruptRegistryFile(
                    self.aliases_uri, f"is missing but {HISTORY_FILE} records {len(moves)} moves", self.repair_hint
                )
            return AliasState({}, [])
        seq, aliases = committed
        if seq > len(moves):
            raise CorruptRegistryFile(
                self.aliases_uri,
                f"records {seq} moves but {self.history_uri} holds only {len(moves)}",
                self.repair_hint,
            )
        history = moves[:seq]
        replayed = current_of(history)
        if aliases != replayed:
            raise CorruptRegistryFile(
                self.aliases_uri,
                f"says {_describe(aliases)} but its history ({HISTORY_FILE}, "
                f"moves 1-{seq}) gives {_describe(replayed)}",
                self.repair_hint,
            )
        if check_targets:
            self._check_targets(aliases)
        return AliasState(aliases, history)

    def current(self) -> dict[str, int]:
        return self.load().aliases

    def history(self) -> list[AliasMove]:
        return self.load().history

    def _read_committed_seq(self) -> tuple[int, dict[str, int]] | None:
        """(history_seq, aliases) from aliases.json; None if it does not exist. A file written
        before `history_seq` existed (a flat {alias: version}) covers the whole history."""
        if not storage.exists(self.aliases_uri):
            return None
        raw = storage.read_bytes(self.aliases_uri)
        if not raw.strip():
            raise CorruptRegistryFile(self.aliases_uri, "is empty", self.repair_hint)
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise CorruptRegistryFile(
                self.aliases_uri, f"is not valid JSON (truncated?): {e}", self.repair_hint
            ) from None
        if not isinstance(doc, dict):
            raise CorruptRegistryFile(
                self.aliases_uri,
                f'holds a JSON {_json_type(doc)}, expected an object {{"aliases": {{...}}, "history_seq": N}}',
                self.repair_hint,
            )
        if isinstance(doc.get("aliases"), dict):
            aliases, seq = doc["aliases"], doc.get("history_seq")
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                raise CorruptRegistryFile(
                    self.aliases_uri, f"history_seq is {seq!r}, expected a count of moves", self.repair_hint
                )
        else:  # the flat format of earlier releases
            aliases, seq = doc, len(self._read_history())
        for alias, version in aliases.items():
            if (
                not _ALIAS.fullmatch(str(alias))
                or isinstance(version, bool)
                or not isinstance(version, int)
                or version < 1
            ):
                raise CorruptRegistryFile(
                    self.aliases_uri,
                    f"alias {alias!r} -> {version!r} is not an alias name and a version number",
                    self.repair_hint,
                )
        return seq, dict(sorted(aliases.items()))

    def _read_history(self) -> list[AliasMove]:
        if not storage.exists(self.history_uri):
            return []
        moves = []
        for number, line in enumerate(storage.read_bytes(self.history_uri).decode(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                move = AliasMove.from_json(json.loads(line))
                ok = move.seq == len(moves) + 1 and move.action in ACTIONS and bool(_ALIAS.fullmatch(move.alias))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise CorruptRegistryFile(
                    self.history_uri,
                    f"line {number} is not a move record ({e}); the history "
                    "cannot be rebuilt automatically: restore it from a backup",
                ) from None
            if not ok:
                raise CorruptRegistryFile(
                    self.history_uri,
                    f"line {number} is not move {len(moves) + 1} "
                    f"(seq {move.seq}, action {move.action!r}, alias {move.alias!r}); the "
                    "history cannot be rebuilt automatically: restore it from a backup",
                )
            moves.append(move)
        return moves

    def _check_targets(self, aliases: dict[str, int]) -> None:
        """Every alias names a complete version; else the history itself leads to a missing one
        (aliases.json agrees with it), which a rebuild cannot fix: moving the alias can."""
        if self._version_exists is None:
            return
        for alias, version in aliases.items():
            if not self._version_exists(version):
                have = ", ".join(map(str, self._versions())) if self._versions else ""
                raise CorruptRegistryFile(
                    self.aliases_uri,
                    f"alias {alias!r} points at version {version}, which does not exist (versions: {have or 'none'})",
                    f"restore that version's directory, or move the alias: "
                    f"`mlops models promote {self.name}@N --to {alias}`",
                )

    # ---- moving (under the lock) -----------------------------------------------------------
    def check_move(self, alias: str) -> None:
        """Raises what a move of `alias` would raise on the current files, writing nothing: a
        caller with work to do before the move (a registration copying files) checks first."""
        aliases = self.load(check_targets=False).aliases
        self._check_targets({a: v for a, v in aliases.items() if a != alias})

    def move(self, alias: str, to_version: int, *, action: str, reason: str = "", by: str | None = None) -> AliasMove:
        """Points `alias` at `to_version`. A no-op (returned with seq None) if it already does."""

        def decide(stacks: dict[str, list[int]]) -> tuple[int | None, int]:
            stack = stacks.get(alias, [])
            return (stack[-1] if stack else None), to_version

        return self._update(alias, action, reason, by, decide)

    def rollback(
        self, alias: str, *, reason: str = "", by: str | None = None, check: Callable[[int], None] | None = None
    ) -> AliasMove:
        """Moves `alias` back to its target before the current one; `check(version)` may veto."""

        def decide(stacks: dict[str, list[int]]) -> tuple[int | None, int]:
            stack = stacks.get(alias, [])
            if len(stack) < 2:
                where = f"it points at version {stack[-1]} since its first move" if stack else "it was never set"
                raise NoRollbackTarget(f"{self.name}@{alias}: nothing to roll back to: {where}")
            if check is not None:
                check(stack[-2])
            return stack[-1], stack[-2]

        return self._update(alias, "rollback", reason, by, decide)

    def _update(
        self,
        alias: str,
        action: str,
        reason: str,
        by: str | None,
        decide: Callable[[dict[str, list[int]]], tuple[int | None, int]],
    ) -> AliasMove:
        at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        by = by or default_actor()
        with locking.exclusive(self.lock_uri, timeout_s=self.lock_timeout_s):
            # Every check before the first write. An alias at a missing version only blocks a move
            # that would leave it there: moving that alias elsewhere is how it gets fixed.
            history = self.load(check_targets=False).history
            from_version, to_version = decide(replay(history))
            if from_version == to_version and action != "rollback":
                self._check_targets(current_of(history))
                return AliasMove(None, alias, from_version, to_version, action, at, by, reason)
            move = AliasMove(len(history) + 1, alias, from_version, to_version, action, at, by, reason)
            self._check_targets(current_of(history + [move]))
            self._commit(history + [move])
            return move

    def _commit(self, history: list[AliasMove]) -> None:
        """Writes the history, then aliases.json (the commit point); on an error, puts both files
        back as they were, so a failed move leaves them byte-identical."""
        before = {
            uri: storage.read_bytes(uri) if storage.exists(uri) else None
            for uri in (self.history_uri, self.aliases_uri)
        }
        try:
            if before[self.aliases_uri] is None:  # first move: commit "nothing yet" before any history exists
                storage.write_bytes_atomic(self.aliases_uri, _aliases_bytes({}, 0))
            storage.write_bytes_atomic(self.history_uri, _history_bytes(history))
            storage.write_bytes_atomic(self.aliases_uri, _aliases_bytes(current_of(history), len(history)))
        except BaseException:
            for uri, body in before.items():
                with contextlib.suppress(Exception):
                    if body is None:
                        storage.remove(uri)
                    else:
                        storage.write_bytes_atomic(uri, body)
            raise

    # ---- repair ------------------------------------------------------------------------------
    def repair(self) -> dict[str, Any]:
        """Rebuilds aliases.json from history.jsonl if it is unreadable or disagrees with it.
        Idempotent: on a consistent state it writes nothing. Returns what it found and changed."""
        with locking.exclusive(self.lock_uri, timeout_s=self.lock_timeout_s):
            try:
                state = self.load()
                return {
                    "model": self.name,
                    "file": self.aliases_uri,
                    "problem": None,
                    "changes": [],
                    "aliases": state.aliases,
                    "history_seq": len(state.history),
                }
            except CorruptRegistryFile as e:
                if e.uri == self.history_uri:
                    raise  # the history is the source of truth: nothing to rebuild it from
                problem = e.problem
            moves = self._read_history()
            try:  # a readable aliases.json says which moves were committed; else (unreadable, lost) all of them
                committed = self._read_committed_seq()
            except CorruptRegistryFile:
                committed = None
            seq, old = committed if committed is not None else (len(moves), {})
            seq = min(seq, len(moves))
            rebuilt = current_of(moves[:seq])
            self._check_targets(rebuilt)
            changes = [
                {"alias": a, "was": old.get(a), "now": rebuilt.get(a)}
                for a in sorted(set(old) | set(rebuilt))
                if old.get(a) != rebuilt.get(a)
            ]
            storage.write_bytes_atomic(self.aliases_uri, _aliases_bytes(rebuilt, seq))
            return {
                "model": self.name,
                "file": self.aliases_uri,
                "problem": problem,
                "changes": changes,
                "aliases": rebuilt,
                "history_seq": seq,
            }


def _history_bytes(history: list[AliasMove]) -> bytes:
    return "".join(json.dumps(m.to_json(), sort_keys=True) + "\n" for m in history).encode()


def _aliases_bytes(aliases: dict[str, int], history_seq: int) -> bytes:
    doc = {"aliases": dict(sorted(aliases.items())), "history_seq": history_seq}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _describe(aliases: dict[str, int]) -> str:
    return ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "no aliases"


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


def check_alias_name(alias: str) -> None:
    """Aliases are lower-case words that cannot be mistaken for a version number or a keyword."""
    if not _ALIAS.fullmatch(alias or "") or alias == "latest":
        raise InvalidRegistryInput(
            f"invalid alias {alias!r}: use a lower-case word such as 'production' or "
            "'staging' ('latest' and numbers are reserved for versions)"
        )
