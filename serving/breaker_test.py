"""serving.breaker.CircuitBreaker on a fake clock: opens after N consecutive failures, lets one
probe through after the cool-down, closes on its success, re-opens on its failure; one log line
per state change."""

from __future__ import annotations

import logging

from serving.breaker import CircuitBreaker, State


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock, changes=None):
    return CircuitBreaker(
        "feature store",
        failures=3,
        cooldown_s=5.0,
        clock=clock,
        on_change=(changes.append if changes is not None else None),
    )


def test_opens_after_consecutive_failures_only():
    clock, changes = FakeClock(), []
    breaker = make(clock, changes)
    breaker.failure("timeout")
    breaker.failure("timeout")
    breaker.success()  # resets the count
    breaker.failure("timeout")
    breaker.failure("timeout")
    assert breaker.state is State.CLOSED and breaker.allow()
    breaker.failure("unavailable")
    assert breaker.state is State.OPEN and changes == [State.OPEN]
    assert not breaker.allow() and not breaker.allow()
    assert breaker.retry_after_s() == 5.0


def test_half_open_lets_one_probe_through_and_its_success_closes():
    clock, changes = FakeClock(), []
    breaker = make(clock, changes)
    for _ in range(3):
        breaker.failure()
    clock.now += 4.9
    assert not breaker.allow() and breaker.retry_after_s() > 0
    clock.now += 0.1
    assert breaker.state is State.HALF_OPEN and breaker.retry_after_s() == 0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # others wait for its outcome
    breaker.success()
    assert breaker.state is State.CLOSED and breaker.allow() and breaker.allow()
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_a_failed_probe_opens_for_another_cool_down():
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.failure()
    clock.now += 5
    assert breaker.allow()
    breaker.failure("timeout")  # one failure is enough in half-open
    assert breaker.state is State.OPEN and not breaker.allow()
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_one_log_line_per_state_change(caplog):
    clock = FakeClock()
    breaker = make(clock)
    with caplog.at_level(logging.INFO, logger="mlops.serving"):
        for _ in range(10):  # failures past the threshold while open change nothing
            breaker.failure("timeout")
            breaker.allow()
        clock.now += 5
        breaker.allow()
        breaker.allow()
        breaker.success()
        breaker.success()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("feature store circuit breaker open: 3 consecutive failures, the last: timeout")
    assert "half-open" in lines[1] and "closed" in lines[2]
