"""A circuit breaker for one dependency (the Feast online store): stop calling it while it fails.

    breaker = CircuitBreaker("feature store", failures=5, cooldown_s=5.0)
    if breaker.allow():           # False while open: answer without calling
        try:
            call()
        except Exception:
            breaker.failure()
        else:
            breaker.success()

States: CLOSED (calls go through; `failures` consecutive failures open it), OPEN (no call for
`cooldown_s`), HALF_OPEN (the cool-down is over: ONE call goes through as a probe; its success
closes the breaker, its failure opens it for another cool-down). So an outage costs one failed
call per cool-down once the breaker is open. Each state change is one log line and calls
`on_change(state)` (the server's gauge). Not thread-safe by itself: the server calls it from
its event loop only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import IntEnum

log = logging.getLogger("mlops.serving")


class State(IntEnum):
    """The values of the mlops_feature_store_breaker_state gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ):
        self.name = name
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_change = on_change
        self._state = State.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self._probing = False  # half-open: the probe is out

    @property
    def state(self) -> State:
        """The state now: an open breaker whose cool-down is over is half-open."""
        if self._state is State.OPEN and self.clock() - self.opened_at >= self.cooldown_s:
            self._enter(
                State.HALF_OPEN, "cool-down of %.1f s over: letting one call through as a probe", self.cooldown_s
            )
        return self._state

    def retry_after_s(self) -> float:
        """Seconds until the breaker lets a call through again (0 when it does now)."""
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self.opened_at))

    def allow(self) -> bool:
        """May the caller call the dependency now? In half-open, True once (the probe)."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self.consecutive_failures = 0
        self._probing = False
        if self._state is not State.CLOSED:
            self._enter(State.CLOSED, "a call succeeded: calling again")

    def abandon(self) -> None:
        """The call ended without telling about the dependency (the caller's own error): a
        half-open breaker lets the next call probe instead."""
        self._probing = False

    def failure(self, reason: str = "error") -> None:
        self.consecutive_failures += 1
        self._probing = False
        if self._state is State.HALF_OPEN:
            self._open(f"the probe failed ({reason})")
        elif self._state is State.CLOSED and self.consecutive_failures >= self.threshold:
            self._open(f"{self.consecutive_failures} consecutive failures, the last: {reason}")

    def _open(self, why: str) -> None:
        self.opened_at = self.clock()
        self._enter(State.OPEN, "%s: no call for %.1f s", why, self.cooldown_s)

    def _enter(self, state: State, message: str, *args) -> None:
        self._state = state
        log.warning("%s circuit breaker %s: " + message, self.name, state.name.lower().replace("_", "-"), *args)
        if self.on_change is not None:
            self.on_change(state)
