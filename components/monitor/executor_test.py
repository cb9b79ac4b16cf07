"""The monitoring run on small synthetic windows: payload logs written by serving's PayloadLogger,
a tiny real SavedModel registered with its training lineage in real ML Metadata (SQLite), real TFDV.

Version 1 is trained on "winter" rows; a stable window is drawn from the same generator, a drifted
one from a "summer" generator (warmer, later flights, another carrier mix)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from mlops.config import load_config
from tests.support import monitored_model
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.monitored_model import log_window

START = pd.Timestamp("2013-07-01T00:00:00Z")
CARRIERS = np.array(["UA", "AA", "DL", "B6"])
ORIGINS = np.array(["EWR", "JFK", "LGA"])
DESTS = np.array(["ATL", "ORD", "LAX", "BOS", "MCO", "MIA", "SFO", "DFW"])


def synthetic_rows(n: int, seed: int, summer: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    temp = rng.normal(80 if summer else 40, 10, n)
    temp[rng.random(n) < 0.02] = np.nan
    return {
        "hour": rng.integers(13 if summer else 5, 24, n).astype(np.float32),
        "distance": rng.lognormal(6.5, 0.5, n).astype(np.float32),
        "temp": temp.astype(np.float32),
        "seats": rng.choice([55.0, 140.0, 180.0, 200.0], n).astype(np.float32),
        "carrier": rng.choice(CARRIERS, n, p=[0.1, 0.2, 0.2, 0.5] if summer else [0.4, 0.3, 0.2, 0.1]).astype(object),
        "origin": rng.choice(ORIGINS, n).astype(object),
        "dest": np.where(rng.random(n) < (0.02 if summer else 0), "SEA", rng.choice(DESTS, n)).astype(object),
        "month": rng.choice(["7", "8"] if summer else ["1", "2"], n).astype(object),
    }


def train_reference(config, root: str, model_dir: str, rows: int = 3000) -> None:
    """Registers model_dir as flights@1 (production), trained on `rows` winter rows."""
    monitored_model.train_reference(config, root, model_dir, pd.DataFrame(synthetic_rows(rows, seed=1)))


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, tiny_model_dirs):
    """flights@1 with its training reference, a stable window at 00:00 and a drifted one at 02:00."""
    root = str(tmp_path_factory.mktemp("monitoring") / "artifacts")
    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": root, "monitoring.reference_rows": 3000})
    train_reference(config, root, tiny_model_dirs[1])
    log_window(config, "1", synthetic_rows(1500, seed=11), START)
    log_window(config, "1", synthetic_rows(1500, seed=12, summer=True), START + pd.Timedelta(hours=2), source="batch")
    return config


def run_monitor(config, window_hours=(0, 1), model="flights@production", run_id="mon-1"):
    from components.monitor.executor import PIPELINE, default_out_dir, monitor

    start, end = START + pd.Timedelta(hours=window_hours[0]), START + pd.Timedelta(hours=window_hours[1])
    out = default_out_dir(config, "flights", run_id)
    return monitor(config, model, start, end, out, pipeline=PIPELINE, run_id=run_id, log=lambda *_: None), out


def monitor_executions(config):
    from mlops.metadata.store import open_store

    return [e for e in open_store(config).list_executions() if e.component == "monitor"]


def test_stable_window_is_not_flagged_and_a_drifted_one_is(monitored):
    stable, _ = run_monitor(monitored, (0, 1), run_id="mon-stable")
    drifted, out = run_monitor(monitored, (2, 3), run_id="mon-drifted")

    [s] = stable["versions"]
    assert s["rows"] == 1500 and s["selected"]
    assert s["verdict"]["drifted_features"] == [] and not s["verdict"]["drifted"], s["verdict"]["summary"]
    assert not s["prediction_drift"]["drifted"] and not s["joint_drift"]["drifted"]
    assert s["joint_drift"]["score"] < 0.6
    [d] = drifted["versions"]
    assert {"temp", "hour", "carrier", "month"} <= set(d["verdict"]["drifted_features"]), d["verdict"]["summary"]
    assert not {"distance", "origin", "seats"} & set(d["verdict"]["drifted_features"])
    assert d["prediction_drift"]["drifted"] and d["joint_drift"]["drifted"] and d["joint_drift"]["score"] > 0.9
    assert d["sources"] == {"batch": 1500}
    by_feature = {f["feature"]: f for f in d["feature_drift"]}
    assert by_feature["temp"]["effect"] > 3 and by_feature["temp"]["p_value"] < 1e-10  # effect size beside p-value
    assert by_feature["carrier"]["psi"] > 0.25
    # TFDV's own comparators agree at the schema level; a new destination is outside the schema's domain
    assert {"temp", "carrier"} <= set(d["verdict"]["tfdv_skewed_features"])
    assert [a["kind"] for a in d["tfdv"]["anomalies"] if a["feature"] == "dest"] == [
        "ENUM_TYPE_UNEXPECTED_STRING_VALUES"
    ]
    assert s["tfdv"]["anomalies"] == []
    assert d["quality"]["month"]["oov_rate"] == 1.0 and s["quality"]["month"]["oov_rate"] == 0.0
    assert 0.01 < d["quality"]["dest"]["oov_rate"] < 0.03 and d["quality"]["dest"]["oov_examples"] == ["SEA"]
    assert 0.005 < d["quality"]["temp"]["missing_rate"] < 0.04

    files = sorted(os.listdir(out))
    assert files == ["metrics.prom", "report.html", "result.json", "v1"], files
    assert json.load(open(f"{out}/result.json"))["drifted"] is True
    page = open(f"{out}/report.html").read()
    assert page.count("<svg") == 9 and "<script" not in page and "stylesheet" not in page  # self-contained
    prom = open(f"{out}/metrics.prom").read()
    assert 'mlops_monitoring_feature_drifted{feature="temp",model="flights",version="1"} 1.0' in prom
    assert 'mlops_monitoring_estimated_metric{bound="value",metric="auc",model="flights",version="1"}' in prom


def test_the_window_is_read_in_chunks_and_the_result_does_not_depend_on_their_size(monitored, monkeypatch):
    """Read 97 rows at a time (spied on: no batch is larger), with a 400-row sample: the same result
    as one 100,000-row chunk. Counts (rows, sources, missing/OOV rates, categories) are exact, also
    against a sample as large as the window; only the row-based tests see the sample."""
    import serving.payload_log as payload_log

    read = payload_log.iter_payload_logs
    batches: list[int] = []

    def spied(*args, **kwargs):
        for batch in read(*args, **kwargs):
            batches.append(len(batch))
            yield batch

    monkeypatch.setattr(payload_log, "iter_payload_logs", spied)

    def run(chunk_rows, sample_rows, run_id):
        from components.monitor.executor import PIPELINE, default_out_dir, monitor

        start, end = START + pd.Timedelta(hours=2), START + pd.Timedelta(hours=3)
        out = default_out_dir(monitored, "flights", run_id)
        batches.clear()
        result = monitor(
            monitored, "flights@production", start, end, out, pipeline=PIPELINE, run_id=run_id,
            log=lambda *_: None, chunk_rows=chunk_rows, sample_rows=sample_rows,
        )  # fmt: skip
        [version] = result["versions"]
        return version, list(batches)

    small, small_batches = run(97, 400, "mon-chunks-97")
    one, one_batches = run(100_000, 400, "mon-chunks-1")
    full, _ = run(97, 10_000, "mon-chunks-full")
    assert max(small_batches) <= 97 and sum(small_batches) == 2 * 1500  # two passes over the window
    assert max(one_batches) == 1500

    tfdv_small, tfdv_one = small.pop("tfdv"), one.pop("tfdv")
    assert small == one
    assert [a["kind"] for a in tfdv_small["anomalies"]] == [a["kind"] for a in tfdv_one["anomalies"]]
    for a, b in zip(tfdv_small["skew"], tfdv_one["skew"], strict=True):
        assert (a["feature"], a["exceeded"]) == (b["feature"], b["exceeded"])
        assert a["value"] == pytest.approx(b["value"], abs=1e-6)

    assert small["sample"]["rows"] == 400 and full["sample"]["rows"] == 1500
    for exact in ("rows", "sources", "quality", "store_defaults"):
        assert small[exact] == full[exact]
    by_feature = {d["feature"]: d for d in small["feature_drift"]}
    full_by_feature = {d["feature"]: d for d in full["feature_drift"]}
    assert by_feature["carrier"] == full_by_feature["carrier"]  # categorical: exact counts
    temp = by_feature["temp"]
    assert temp["window_values"] == full_by_feature["temp"]["window_values"] > 1400  # present values, not the sample's
    assert "random sample of 400 rows" in temp["note"] and temp["drifted"]
    assert temp["effect"] == pytest.approx(full_by_feature["temp"]["effect"], rel=0.1)
    from components.monitor.executor import default_out_dir

    def page(run_id):
        return open(f"{default_out_dir(monitored, 'flights', run_id)}/report.html").read()

    assert "uniform random sample of 400 rows" in page("mon-chunks-97")  # the report says what was sampled
    assert "random sample" not in page("mon-chunks-full")


def test_the_run_is_recorded_with_lineage_to_the_model(monitored):
    from mlops.metadata.store import open_store

    result, out = run_monitor(monitored, (0, 1), run_id="mon-lineage")
    store = open_store(monitored)
    [drift_result] = [a for a in store.list_artifacts("DriftResult") if a.uri == out]
    steps = store.lineage(drift_result.id)
    assert steps[0].execution.component == "monitor"
    inputs = {(s.consumed_as, s.artifact.type_name) for s in steps if s.depth == 1}
    assert inputs == {("payload_window", "mlops.PayloadWindow"), ("model", "mlops.PushedModel")}
    assert any(s.execution and s.execution.component == "trainer" for s in steps)  # through the model to training
    [stats] = [a for a in store.list_artifacts("Statistics") if a.uri == f"{out}/v1/serving.stats.pb"]
    assert stats.properties["split"] == "serving" and stats.properties["model"] == "flights@1"
    assert stats.properties["row_count"] == 1500


def test_alibi_detect_agrees_with_the_default_detector():
    from components.monitor import alibi
    from mlops.monitoring.drift import feature_drift

    kinds = {
        k: ("categorical" if k in ("carrier", "origin", "dest", "month") else "numeric") for k in synthetic_rows(1, 0)
    }
    reference = pd.DataFrame(synthetic_rows(2000, seed=1))
    for window, expected in (
        (pd.DataFrame(synthetic_rows(1500, seed=5)), set()),
        # clearly drifted features, clearly stable ones (no borderline new destination)
        (
            pd.DataFrame(synthetic_rows(1500, seed=6, summer=True)).assign(
                dest=lambda f: f["dest"].replace("SEA", "ATL")
            ),
            {"temp", "hour", "carrier", "month"},
        ),
    ):
        default = feature_drift(
            reference, window, kinds, numeric_threshold=0.1, categorical_threshold=0.1, p_value=0.01
        )
        licensed = alibi.feature_drift(reference, window, default, 0.01)
        assert {d.feature for d in default if d.drifted} == expected
        assert {d.feature for d in licensed if d.drifted} == expected
        assert all(d.test.startswith("alibi_") for d in licensed)
        assert alibi.mmd(reference, window, kinds, 0.01)["drifted"] == bool(expected)


def test_bad_input_is_one_message_and_nothing_is_recorded(monitored, tiny_model_dirs):
    from components.monitor.executor import EmptyWindow, ForeignPayloads, parse_window
    from components.monitor.reference import NoTrainingReference
    from mlops.errors import InvalidInput, NotFound
    from tests.support.serving_models import register

    before = len(monitor_executions(monitored))
    monitoring_root = f"{monitored.artifact_root}/monitoring/flights"
    existing = set(os.listdir(monitoring_root)) if os.path.isdir(monitoring_root) else set()

    with pytest.raises(EmptyWindow, match=r"no payload logs of model flights in the window 2013-07-01T05:00:00\+00:00"):
        run_monitor(monitored, (5, 6), run_id="bad-empty")
    # flights@2: registered without a training run (no lineage), and logged
    register(monitored.artifact_root, "flights", tiny_model_dirs[2])
    log_window(monitored, "2", synthetic_rows(300, seed=21), START + pd.Timedelta(hours=8))
    with pytest.raises(NoTrainingReference, match=r"flights@2 has no training reference: .*no mlops.PushedModel"):
        run_monitor(monitored, (8, 9), model="flights@2", run_id="bad-noref")
    with pytest.raises(EmptyWindow, match=r"no payload logs of flights@1 .* holds rows of version\(s\) 2 only"):
        run_monitor(monitored, (8, 9), run_id="bad-version")
    rows = synthetic_rows(300, seed=22)
    del rows["temp"]
    log_window(monitored, "1", rows, START + pd.Timedelta(hours=10), predictions=np.full(300, 0.3))
    with pytest.raises(ForeignPayloads, match=r"flights@1 lack the feature column\(s\) \['temp'\].*another schema"):
        run_monitor(monitored, (10, 11), run_id="bad-schema")
    with pytest.raises(InvalidInput, match="--window 2013-07-02:2013-07-01: the end is not after the start"):
        parse_window("2013-07-02:2013-07-01")
    assert issubclass(EmptyWindow, NotFound) and issubclass(ForeignPayloads, InvalidInput)

    assert len(monitor_executions(monitored)) == before
    assert set(os.listdir(monitoring_root)) == existing if existing else not os.path.isdir(monitoring_root)


def test_parse_window():
    from components.monitor.executor import parse_window

    assert parse_window("2013-07-01:2013-07-02") == (START, START + pd.Timedelta(days=1))
    assert parse_window("2013-07-01T06:00:2013-07-01T12:30") == (
        START + pd.Timedelta(hours=6),
        START + pd.Timedelta(hours=12, minutes=30),
    )
    now = START + pd.Timedelta(days=1)
    assert parse_window(last="6h", now=now) == (now - pd.Timedelta(hours=6), now)
    assert parse_window(default="24h", now=now) == (START, now)


def test_training_skew_check_uses_the_newest_serving_statistics_of_production(monitored, tmp_path):
    """Closing the loop: without serving_statistics given, ExampleValidator compares the training
    statistics with the newest serving statistics a monitoring run recorded for flights@production."""
    from components.example_validator.executor import run as validate_run
    from components.monitor.reference import newest_serving_statistics
    from mlops.metadata.store import open_store

    _, out = run_monitor(monitored, (2, 3), run_id="mon-skew")
    newest = newest_serving_statistics(monitored)
    assert newest == f"{out}/v1/serving.stats.pb"
    root = monitored.artifact_root
    result = validate_run(
        monitored,
        f"{root}/training/statistics",
        f"{root}/training/schema",
        str(tmp_path / "anomalies"),
        pipeline="training",
        run_id="train-2",
    )
    assert result.inputs["serving_statistics"] == newest
    assert {"temp", "carrier"} <= {a.feature for a in result.skew if a.category == "skew"}
    assert any(a.category == "serving" and a.feature == "dest" for a in result.skew)
    store = open_store(monitored)
    [execution] = [e for e in store.list_executions("train-2") if e.component == "example_validator"]
    lineage_inputs = {a.uri for a in store.list_artifacts("Statistics") if a.uri == newest}
    assert lineage_inputs == {newest}


def test_mlops_monitor_run_command(monitored):
    from click.testing import CliRunner

    from cli.main import cli

    base = ["monitor", "run", "--config", str(FLIGHTS_CONFIG), "--set", f"artifact_root={monitored.artifact_root}"]
    base += ["--set", "monitoring.reference_rows=3000"]
    ok = CliRunner().invoke(
        cli, [*base, "--model", "flights@production", "--window", "2013-07-01T02:00:2013-07-01T03:00"]
    )
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout[ok.stdout.index("{") :])
    assert summary["drifted"] is True and summary["rows"] == 1500
    assert os.path.exists(summary["report"]) and summary["versions"][0]["version"] == "1"

    empty = CliRunner().invoke(cli, [*base, "--window", "2013-06-01:2013-06-02"])
    assert empty.exit_code == 1
    [line] = [x for x in empty.output.splitlines() if x.startswith("Error")]
    assert "no payload logs of model flights in the window 2013-06-01T00:00:00+00:00" in line
    bad = CliRunner().invoke(cli, [*base, "--last", "6 hours"])
    assert bad.exit_code == 2 and "--last: '6 hours' is not a duration like 30m, 6h, 2d or 1w" in bad.output


def test_monitoring_pipeline_runs_under_kfp_local(monitored):
    from pipelines import runner

    root = monitored.artifact_root
    result = runner.run_local(
        "monitoring",
        root,
        {
            "config_path": str(FLIGHTS_CONFIG),
            "config_overrides": json.dumps({"monitoring.reference_rows": 3000}),
            "artifact_root": root,
            "model": "flights@production",
            "window": "2013-07-01:2013-07-01T01:00",
        },
        config=monitored,
    )
    [step] = result.steps
    assert step.status == "ok" and step.outputs["Output"] is False  # the stable window: no drift
    assert [e.state for e in monitor_executions(monitored) if e.name.startswith(result.run_id)] == ["COMPLETE"]


class _Gateway:
    """A loopback HTTP endpoint standing in for a Pushgateway: records what prometheus_client pushes."""

    def __init__(self):
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                received.append((self.command, self.path, self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_metrics_are_pushed_when_a_gateway_is_configured_and_a_failed_push_records_nothing(monitored):
    from components.monitor.executor import default_out_dir
    from mlops.errors import Unavailable

    gateway = _Gateway()
    try:
        with_gateway = monitored.model_copy(
            update={"monitoring": monitored.monitoring.model_copy(update={"pushgateway_url": gateway.url})}
        )
        _, out = run_monitor(with_gateway, (2, 3), run_id="mon-push")
    finally:
        gateway.close()
    [(method, path, body)] = gateway.received
    assert (method, path) == ("PUT", "/metrics/job/mlops_monitoring/model/flights")
    assert b'mlops_monitoring_feature_drifted{feature="temp",model="flights",version="1"} 1.0' in body
    assert "metrics.prom" not in os.listdir(out)  # pushed, not written

    before = len(monitor_executions(monitored))
    gone = monitored.model_copy(
        update={"monitoring": monitored.monitoring.model_copy(update={"pushgateway_url": gateway.url})}
    )
    with pytest.raises(Unavailable, match=r"monitoring.pushgateway_url http://127.0.0.1:\d+: push failed"):
        run_monitor(gone, (2, 3), run_id="mon-push-down")
    assert not os.path.exists(default_out_dir(monitored, "flights", "mon-push-down"))
    assert len(monitor_executions(monitored)) == before
