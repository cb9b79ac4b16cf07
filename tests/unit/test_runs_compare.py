"""`mlops runs compare`: runs side by side from ML Metadata (real MLMD on SQLite), and with --host
the KFP API's state and parameters (fake v2beta1 API)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mlops.config import load_config
from mlops.metadata.store import ArtifactRef, open_store
from mlops.steps import record_step
from tests.support.fake_kfp_api import FakeKfpServer
from tests.support.fixtures import FLIGHTS_CONFIG


def mlops(*args: str):
    from cli.main import cli

    return CliRunner().invoke(cli, list(args))


def record_run(config, run_id: str, span: str, auc: float, epochs: int) -> None:
    """A training run as its driver and steps record it: parameters on the run, the dataset version
    ExampleGen read, the Evaluator's metrics."""
    store = open_store(config)
    store.start_run("training", run_id, {"runner": "kfp.local", "parameters": json.dumps({"epochs": epochs})})
    dataset = ArtifactRef("Dataset", f"/data/flights/{span}", name=f"flights@{span}", properties={"span": span})
    record_step(config, pipeline="training", run_id=run_id, component="example_gen", inputs={"dataset": [dataset]})
    evaluation = ArtifactRef(
        "ModelEvaluation", f"/runs/{run_id}/evaluation", properties={"metrics": json.dumps({"auc": auc, "n": 10})}
    )
    record_step(config, pipeline="training", run_id=run_id, component="evaluator", outputs={"evaluation": [evaluation]})
    store.finish_run(run_id, "COMPLETE")


@pytest.fixture
def two_runs(artifact_root):
    config = load_config(FLIGHTS_CONFIG)
    record_run(config, "run-a", "2013-01", 0.70, 1)
    record_run(config, "run-b", "2013-02", 0.72, 3)
    return config


def test_compare_two_local_runs(two_runs, tmp_path):
    html = tmp_path / "compare.html"
    result = mlops("runs", "compare", "run-a", "run-b", "--json", "--html", str(html))
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)
    a, b = comparison["runs"]
    assert (a["run_id"], b["run_id"]) == ("run-a", "run-b")
    assert a["parameters"] == {"epochs": 1} and b["parameters"] == {"epochs": 3}
    assert a["datasets"] == ["flights@2013-01"] and b["datasets"] == ["flights@2013-02"]
    assert a["metrics"] == {"auc": 0.70, "n": 10} and b["metrics"]["auc"] == 0.72
    assert a["config_hash"] == b["config_hash"] == two_runs.content_hash()
    assert a["git_commit"] and a["state"] == "COMPLETE"
    assert comparison["differs"] == ["parameters", "datasets", "metrics"]
    page = html.read_text()
    assert page.count("<svg") == 2 and "auc" in page and "run-b" in page  # one chart per metric

    table = mlops("runs", "compare", "run-a", "run-b")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert any(line.startswith("*metric auc") and "0.7" in line and "0.72" in line for line in lines)
    assert any(line.startswith(" config_hash") for line in lines)  # equal: not marked


def test_compare_needs_two_known_runs(two_runs):
    one = mlops("runs", "compare", "run-a")
    assert one.exit_code == 2 and "two or more" in one.output
    unknown = mlops("runs", "compare", "run-a", "run-zzz")
    assert unknown.exit_code == 1 and "run-zzz" in unknown.output and "run-a," not in unknown.output


def test_local_runs_list_and_get(two_runs):
    listed = mlops("runs", "list", "--json")
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["run-b", "run-a"]  # newest first
    got = mlops("runs", "get", "run-a")
    assert json.loads(got.stdout)["parameters"] == {"epochs": 1}
    assert mlops("runs", "get", "nope").exit_code == 1


def test_compare_with_kfp_takes_state_and_parameters_from_the_api(two_runs, monkeypatch, tmp_path):
    """A cluster run: its steps recorded into ML Metadata under the KFP run id, KFP holds the rest."""
    from pipelines import runner

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "")
    with FakeKfpServer() as (url, fake):
        submitted = mlops(
            "submit", "training", "--host", url, "--package", str(runner.COMPILED_DIR / "training.yaml"),
            "--param", "epochs=4",
        )  # fmt: skip
        run_id = json.loads(submitted.stdout)["run_id"]
        config = two_runs
        dataset = ArtifactRef("Dataset", "/data/flights/2013-03", name="flights@2013-03")
        record_step(config, pipeline="training", run_id=run_id, component="example_gen", inputs={"dataset": [dataset]})
        result = mlops("runs", "compare", "run-a", run_id, "--host", url, "--json")
    assert result.exit_code == 0, result.output
    a, cluster = json.loads(result.stdout)["runs"]
    assert cluster["parameters"] == {"epochs": 4} and cluster["state"] == "RUNNING"
    assert cluster["datasets"] == ["flights@2013-03"] and cluster["found_in"] == ["mlmd", "kfp"]
    assert a["found_in"] == ["mlmd"]  # a local run: unknown to KFP, still compared


@pytest.mark.integration
def test_local_pipeline_runs_record_their_parameters(artifact_root, monkeypatch):
    """runner.run_local keeps the run's arguments on its run context: compare shows them."""
    from pipelines import runner

    monkeypatch.setitem(runner.PIPELINES, "slow", "tests.support.slow_pipeline:slow_pipeline")
    config = load_config(FLIGHTS_CONFIG)
    run_ids = []
    for seconds in (0.0, 0.5):
        args = {"config_path": str(FLIGHTS_CONFIG), "artifact_root": config.artifact_root, "seconds": seconds}
        run_ids.append(runner.run_local("slow", config.artifact_root, args, config=config).run_id)
    result = mlops("runs", "compare", *run_ids, "--json")
    assert result.exit_code == 0, result.output
    first, second = json.loads(result.stdout)["runs"]
    assert first["parameters"]["seconds"] == 0.0 and second["parameters"]["seconds"] == 0.5
    assert first["state"] == second["state"] == "COMPLETE"
    assert json.loads(result.stdout)["differs"] == ["parameters"]
