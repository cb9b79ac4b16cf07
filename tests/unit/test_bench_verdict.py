"""bench/serving.py's verdict: a target passes only if it passes in every round, each round comparing
numbers measured in that round; the spread over the rounds is reported."""

from __future__ import annotations

from bench.serving import spread, targets, verdict_summary

CONCURRENCY = 8
THROUGHPUT = f"throughput_{CONCURRENCY}_workers"


def endpoint(p99s: list[float], calls: list[float] | None = None) -> dict:
    """An online endpoint as bench_online leaves it: medians at the top, every round kept."""
    calls = calls or [100.0] * len(p99s)
    latency = [{"p50_ms": p / 2, "p99_ms": p} for p in p99s]
    throughput = [{"calls_per_s": c} for c in calls]
    return {
        "latency_1_worker": {"p99_ms": spread(p99s)["median"], "rounds": latency},
        THROUGHPUT: {"calls_per_s": spread(calls)["median"], "rounds": throughput},
    }


def result_with(server: dict, peer_calls: list[float], coldstart: dict | None = None) -> dict:
    result = {
        "settings": {"server_runtimes": ["auto"]},
        "raw": {"auto_1row": {"p99_ms": 1.0}, "model_plus_online_read_1row": {"p99_ms": 2.0}},
        "online": {"server": server, "peer": {"rest_full": endpoint([1.0] * len(peer_calls), peer_calls)}},
    }
    if coldstart:
        result["coldstart"] = coldstart
    return result


def by_name(checks: list[dict], prefix: str) -> dict:
    [check] = [c for c in checks if c["target"].startswith(prefix)]
    return check


def test_a_target_failing_in_one_round_fails_though_its_median_passes():
    # rest full p99 limit: 2 x 1.0 + 1 = 3 ms; the median (2.5) passes, round 3 (3.5) does not
    server = {"rest_full": endpoint([2.0, 2.5, 3.5]), "grpc_full": endpoint([2.0, 2.0, 2.0])}
    check = by_name(targets(result_with(server, [100.0] * 3), CONCURRENCY), "rest full 1-row p99")
    assert check["pass"] is False and check["rounds_passed"] == "2/3"
    assert check["value"] == 2.5 and check["limit"] == 3.0
    assert [r["pass"] for r in check["per_round"]] == [True, True, False]
    assert by_name(targets(result_with(server, [100.0] * 3), CONCURRENCY), "grpc full 1-row p99")["pass"] is True


def test_rounds_are_paired_not_medians_against_medians():
    # server vs peer throughput: each round the server beats that round's peer, although the
    # server's median (110) is below the peer's (120): a pass; and the reverse is a fail
    server = {"rest_full": endpoint([1.0] * 3, [110.0, 200.0, 90.0])}
    check = by_name(targets(result_with(server, [100.0, 120.0, 80.0]), CONCURRENCY), "rest full throughput")
    assert check["pass"] is True and check["rounds_passed"] == "3/3"
    server = {"rest_full": endpoint([1.0] * 3, [130.0, 130.0, 100.0])}
    check = by_name(targets(result_with(server, [100.0, 120.0, 110.0]), CONCURRENCY), "rest full throughput")
    assert check["pass"] is False and check["rounds_passed"] == "2/3"


def test_cold_start_rounds_pair_each_server_with_its_own_bare_floor():
    coldstart = {
        "per_round": {
            "bare": [{"tf_import_s": 5.0, "model_load_s": 1.0}, {"tf_import_s": 9.0, "model_load_s": 1.0}],
            "server": [{"ready_s": 8.5}, {"ready_s": 12.0}],
        }
    }
    check = by_name(targets(result_with({}, [100.0], coldstart), CONCURRENCY), "cold start")
    assert [r["limit"] for r in check["per_round"]] == [9.0, 13.0]
    assert check["pass"] is True


def test_unmeasured_targets_are_neither_passed_nor_failed():
    checks = targets(result_with({}, [100.0]), CONCURRENCY)
    summary = verdict_summary(checks)
    assert by_name(checks, "batch rows/s")["pass"] is None
    assert "batch rows/s >= 70% of raw batched (ratio)" in summary["not_measured"]
    assert summary["passed"] == [] and summary["failed"] == []


def test_spread_reports_min_median_max_and_skips_missing_rounds():
    assert spread([3.0, 1.0, None, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([None]) is None
