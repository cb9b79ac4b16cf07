"""`mlops submit`, `mlops schedule` and `mlops runs` through the real kfp.Client against a fake of the
KFP v2beta1 REST API (tests/support/fake_kfp_api.py) that checks what each request carries."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from click.testing import CliRunner

from pipelines import runner
from pipelines.submit import ir_content_hash
from tests.support.fake_kfp_api import FakeKfp, FakeKfpServer


@pytest.fixture(scope="module")
def training_ir(tmp_path_factory):
    """The committed cluster IR of `training` (compiling anew per test costs ~10 s)."""
    return runner.COMPILED_DIR / "training.yaml"


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
    monkeypatch.delenv("MLOPS_KFP_TOKEN", raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "")
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with FakeKfpServer() as served:
        yield served


def mlops(*args: str, env: dict | None = None):
    from cli.main import cli

    return CliRunner().invoke(cli, list(args), env=env)


def out_json(result):
    """What the command printed on stdout, as JSON (progress lines go to stderr)."""
    return json.loads(result.stdout)


def test_submit_uploads_once_and_creates_runs_with_the_parameters(kfp_api, training_ir):
    url, fake = kfp_api
    result = mlops(
        "submit", "training", "--host", url, "--package", str(training_ir), "--param", "epochs=2",
        "--param", "dataset_selector=2013-01:2013-03", "--experiment", "nightly", "--run-name", "first",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    first = out_json(result)
    assert first["pipeline_version_reused"] is False
    assert first["pipeline_version"] == "ir-sha256-" + ir_content_hash(training_ir)[:16]

    [healthz, *_] = fake.calls("GET", "/healthz")
    assert healthz.headers.get("authorization") is None  # no token configured: none sent
    [upload] = fake.calls("POST", "/pipelines/upload_version")
    assert upload.query["name"] == first["pipeline_version"]
    assert yaml.safe_load_all(upload.body["file"]) and list(yaml.safe_load_all(upload.body["file"])) == list(
        yaml.safe_load_all(training_ir.read_text())
    )  # the IR itself, multipart, parsed strictly by the fake
    [experiment] = fake.calls("POST", "/experiments")
    assert experiment.body["display_name"] == "nightly"
    [run] = fake.calls("POST", "/runs")
    assert run.body["display_name"] == "first"
    assert run.body["runtime_config"]["parameters"] == {"epochs": 2, "dataset_selector": "2013-01:2013-03"}
    assert run.body["pipeline_version_reference"]["pipeline_version_id"] in fake.versions

    again = mlops("submit", "training", "--host", url, "--package", str(training_ir), "--experiment", "nightly")
    assert again.exit_code == 0, again.output
    assert out_json(again)["pipeline_version_reused"] is True
    assert len(fake.calls("POST", "/pipelines/upload_version")) == 1  # same content, same version
    assert len(fake.calls("POST", "/experiments")) == 1 and len(fake.runs) == 2
    assert len(fake.pipelines) == 1


def test_changed_ir_adds_one_version(kfp_api, training_ir, tmp_path):
    url, fake = kfp_api
    changed = tmp_path / "training.yaml"
    docs = list(yaml.safe_load_all(training_ir.read_text()))
    docs[0]["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"] = 5
    changed.write_text(yaml.safe_dump_all(docs))
    for package in (training_ir, changed, changed):
        assert mlops("submit", "training", "--host", url, "--package", str(package)).exit_code == 0
    assert len(fake.versions) == 2 and len(fake.pipelines) == 1


def test_submit_compiles_for_the_cluster_with_the_images_asked_for(kfp_api):
    url, fake = kfp_api
    result = mlops("submit", "ingest", "--host", url, "--image-registry", "localhost:5001/mlops", "--tag", "c0ffee")
    assert result.exit_code == 0, result.output
    [upload] = fake.calls("POST", "/pipelines/upload_version")
    spec = next(yaml.safe_load_all(upload.body["file"]))
    assert (
        spec["deploymentSpec"]["executors"]["exec-ingest"]["container"]["image"]
        == "localhost:5001/mlops/pipeline:c0ffee"
    )
    assert spec["root"]["inputDefinitions"]["parameters"]["config_path"]["defaultValue"] == "configs/cluster.yaml"


@pytest.mark.parametrize(("param", "hint"), [("epochs=many", "epochs"), ("epoch=1", "epoch"), ("novalue", "--param")])
def test_bad_param_fails_before_any_request(kfp_api, training_ir, param, hint):
    url, fake = kfp_api
    result = mlops("submit", "training", "--host", url, "--package", str(training_ir), "--param", param)
    assert result.exit_code == 2 and hint in result.output
    assert fake.requests == []


def test_package_of_another_pipeline_is_refused(kfp_api, training_ir):
    url, fake = kfp_api
    result = mlops("submit", "ingest", "--host", url, "--package", str(training_ir))
    assert result.exit_code == 2 and "not ingest" in result.output
    assert fake.requests == []


def test_schedule_is_idempotent_by_name(kfp_api, training_ir):
    url, fake = kfp_api
    args = ["schedule", "training", "--host", url, "--package", str(training_ir), "--cron", "0 3 * * *"]
    first = mlops(*args, "--param", "epochs=1")
    assert first.exit_code == 0, first.output
    assert out_json(first)["action"] == "created"
    [create] = fake.calls("POST", "/recurringruns")
    assert create.body["display_name"] == "training-schedule"
    assert create.body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"  # KFP's cron has seconds first
    assert create.body["no_catchup"] is True and create.body["max_concurrency"] == 1
    assert create.body["mode"] == "ENABLE"
    assert create.body["runtime_config"]["parameters"] == {"epochs": 1}

    same = mlops(*args, "--param", "epochs=1")
    assert same.exit_code == 0 and out_json(same)["action"] == "unchanged"
    assert len(fake.calls("POST", "/recurringruns")) == 1 and len(fake.recurring_runs) == 1

    moved = mlops(*args[:-1], "30 4 * * 1", "--param", "epochs=1")
    assert moved.exit_code == 0 and out_json(moved)["action"] == "replaced"
    [left] = fake.recurring_runs.values()
    assert left["trigger"]["cron_schedule"]["cron"] == "0 30 4 * * 1"


@pytest.mark.parametrize("cron", ["daily", "0 3 * *", "0 3 * * * * *"])
def test_bad_cron_fails_before_any_request(kfp_api, training_ir, cron):
    url, fake = kfp_api
    result = mlops("schedule", "training", "--host", url, "--package", str(training_ir), "--cron", cron)
    assert result.exit_code == 2 and "--cron" in result.output
    assert fake.requests == []


def test_runs_wait_get_and_list(kfp_api, training_ir):
    url, fake = kfp_api
    submitted = mlops("submit", "training", "--host", url, "--package", str(training_ir), "--wait", "--timeout", "30")
    # --wait polls every 5 s: the fake's runs take three GETs (PENDING, RUNNING, SUCCEEDED)
    assert submitted.exit_code == 0, submitted.output
    run = out_json(submitted)
    assert run["state"] == "SUCCEEDED"
    got = mlops("runs", "get", run["run_id"], "--host", url)
    assert got.exit_code == 0 and out_json(got)["run_id"] == run["run_id"]
    listed = mlops("runs", "list", "--host", url, "--json")
    assert [r["run_id"] for r in out_json(listed)] == [run["run_id"]]
    assert mlops("runs", "get", "no-such-run", "--host", url).exit_code == 1


def test_runs_wait_fails_for_a_failed_run(kfp_api, training_ir):
    url, fake = kfp_api
    fake.run_script[:] = ["RUNNING", "FAILED"]
    run = out_json(mlops("submit", "training", "--host", url, "--package", str(training_ir)))
    started = time.monotonic()
    result = mlops("runs", "wait", run["run_id"], "--host", url, "--poll", "0.05")
    assert result.exit_code == 1 and "ended FAILED: step trainer failed" in result.output
    assert time.monotonic() - started < 5


def test_runs_wait_times_out_with_exit_75(kfp_api, training_ir):
    url, fake = kfp_api
    fake.run_script[:] = ["RUNNING"]
    run = out_json(mlops("submit", "training", "--host", url, "--package", str(training_ir)))
    result = mlops("runs", "wait", run["run_id"], "--host", url, "--poll", "0.05", "--timeout", "0.3")
    assert result.exit_code == 75 and "still RUNNING" in result.output


def test_bearer_token_and_service_account_token(monkeypatch, tmp_path, training_ir):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLOPS_KFP_TOKEN", raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "")
    with FakeKfpServer(FakeKfp(token="s3cret")) as (url, fake):
        refused = mlops("submit", "training", "--host", url, "--package", str(training_ir))
        assert refused.exit_code == 1 and "HTTP 401" in refused.output and "healthz" in refused.output
        assert len(fake.requests) == 1 and not fake.runs

        assert (
            mlops("submit", "training", "--host", url, "--package", str(training_ir), "--token", "s3cret").exit_code
            == 0
        )
        monkeypatch.setenv("MLOPS_KFP_TOKEN", "s3cret")
        assert mlops("submit", "training", "--host", url, "--package", str(training_ir)).exit_code == 0
        monkeypatch.delenv("MLOPS_KFP_TOKEN")

        token_file = tmp_path / "token"
        token_file.write_text("s3cret\n")  # the projected service account token of a pod
        monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
        result = mlops("submit", "training", "--host", url, "--package", str(training_ir))
        assert result.exit_code == 0, result.output
        assert {r.headers["authorization"] for r in fake.requests[1:]} == {"Bearer s3cret"}
        assert len(fake.runs) == 3


def test_unreachable_host_is_unavailable_at_once(tmp_path, monkeypatch, training_ir):
    import socket

    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        started = time.monotonic()
        result = mlops("submit", "training", "--host", f"http://127.0.0.1:{port}", "--package", str(training_ir))
    assert result.exit_code == 75 and "unreachable" in result.output
    assert time.monotonic() - started < 5  # not kfp.Client's 5 x 5 s healthz retries


def test_host_must_be_a_url(training_ir):
    result = mlops("submit", "training", "--host", "localhost:8888", "--package", str(training_ir))
    assert result.exit_code == 2 and "--host" in result.output
