"""batch_predict: lineage in a real SQLite ML Metadata (dataset version -> model -> predictions,
continuing into the model's training run), failed runs recorded, and end to end: the
batch_inference pipeline under kfp.local, and `mlops predict batch` with a real trained model over
a dataset version whose feature-store features come from the Feast online store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.support.fixtures import FLIGHTS_CONFIG, REPO, SERVING_PY, run_python

MLOPS = [sys.executable, "-m", "cli"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from tests.support.serving_models import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"))


def tiny_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "hour": rng.integers(0, 24, n),
            "distance": rng.normal(1000, 400, n),
            "temp": rng.normal(50, 15, n),
            "seats": rng.integers(50, 300, n).astype(float),
            "carrier": rng.choice(["UA", "DL", "AA"], n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "dest": rng.choice(["LAX", "SFO"], n),
            "month": rng.integers(1, 13, n),
            "flight_key": [f"k{i}" for i in range(n)],
        }
    )


def config_for(root: Path, **overrides):
    from mlops.config import load_config

    return load_config(
        FLIGHTS_CONFIG, overrides={"artifact_root": str(root), "serving.feature_lookup": False, **overrides}
    )


@pytest.fixture
def trained(tmp_path, tiny_model):
    """An artifact root as the platform leaves it: a February dataset version recorded by ingest,
    and flights@1 (production) recorded by a training run (trainer on the January version, then
    the pusher's registration)."""
    from components.ingest.executor import dataset_ref
    from mlops.datasets.repository import DatasetRepository
    from mlops.metadata.store import ArtifactRef
    from mlops.registry.lineage import record_registration
    from mlops.registry.store import ModelRegistry
    from mlops.steps import record_step
    from tests.support.serving_models import register

    root = tmp_path / "artifacts"
    config = config_for(root)
    repo = DatasetRepository(str(root))
    january, _ = repo.write("flights", tiny_frame(80, seed=1), source="test", span="2013-01")
    february, _ = repo.write("flights", tiny_frame(300), source="test", span="2013-02")
    record_step(
        config,
        pipeline="ingest",
        run_id="ingest-1",
        component="ingest",
        outputs={"dataset": [dataset_ref(january), dataset_ref(february)]},
    )
    record_step(
        config,
        pipeline="training",
        run_id="train-1",
        component="trainer",
        inputs={"dataset": [dataset_ref(january)]},
        outputs={"model": [ArtifactRef("Model", tiny_model)]},
    )
    version = register(root, "flights", tiny_model)
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="test")
    record_registration(config, version, run_id="train-1", pipeline="training", model_artifact_uri=tiny_model)
    return config, january, february


def test_lineage_runs_from_predictions_through_the_model_to_the_training_data(trained, tmp_path, tiny_model):
    from components.batch_predict.executor import run_step
    from mlops import storage
    from mlops.metadata.store import open_store

    config, january, february = trained
    out = str(tmp_path / "out" / "predictions.parquet")
    result = run_step(
        config,
        model="flights@production",
        input="flights@2013-02",
        output_uri=out,
        run_id="batch-1",
        log=lambda _: None,
    )
    assert result.rows == 300 and Path(out).is_file()

    store = open_store(config)
    predictions = store.find_artifact("Predictions", uri=out)
    assert predictions.properties["model"] == "flights@1" and predictions.properties["row_count"] == 300
    assert predictions.properties["content_hash"] == storage.tree_hash(out)
    assert predictions.properties["summary_uri"] == result.summary_uri
    steps = store.lineage(predictions.id)
    chain = [
        (s.depth, s.artifact.type_name, s.artifact.name, s.execution.component if s.execution else None, s.consumed_as)
        for s in steps
    ]
    assert chain == [
        (0, "mlops.Predictions", None, "batch_predict", None),
        (1, "mlops.Dataset", february.id, "ingest", "dataset"),  # the input version, as ingest recorded it
        (1, "mlops.PushedModel", "flights@1", "pusher", "model"),  # the registered version...
        (2, "mlops.Model", None, "trainer", "model"),  # ...its trained model...
        (3, "mlops.Dataset", january.id, "ingest", "dataset"),  # ...and the data it was trained on
    ]
    [execution] = [e for e in store.list_executions("batch-1")]
    assert execution.state == "COMPLETE" and execution.component == "batch_predict"

    # A re-run to the same URI replaces the file: still one Predictions artifact, now two runs.
    run_step(config, model="flights@1", input=february.id, output_uri=out, run_id="batch-2", log=lambda _: None)
    assert [a.uri for a in store.list_artifacts("Predictions")] == [out]
    assert {e.name for e in store.list_executions() if e.component == "batch_predict"} == {
        "batch-1/batch_predict",
        "batch-2/batch_predict",
    }


def test_a_model_directory_is_recorded_as_a_model(trained, tmp_path, tiny_model):
    from components.batch_predict.executor import run_step
    from mlops.metadata.store import open_store

    config, _, february = trained
    out = str(tmp_path / "p.parquet")
    result = run_step(
        config, model=tiny_model, input=february.data_uri, output_uri=out, run_id="batch-dir", log=lambda _: None
    )
    assert not result.from_registry
    store = open_store(config)
    steps = store.lineage(store.find_artifact("Predictions", uri=out).id)
    inputs = {(s.consumed_as, s.artifact.type_name, s.artifact.uri) for s in steps if s.depth == 1}
    assert inputs == {("model", "mlops.Model", tiny_model), ("dataset", "mlops.Dataset", february.data_uri)}


def test_a_failed_run_is_recorded_and_writes_nothing(trained, tmp_path):
    from components.batch_predict.executor import run_step
    from mlops.datasets.repository import DatasetRepository
    from mlops.metadata.store import open_store
    from serving.batch import BatchInputError

    config, _, _ = trained
    broken, _ = DatasetRepository(config.artifact_root).write(
        "flights", tiny_frame(10).drop(columns=["hour"]), source="test", span="2013-03"
    )
    out = tmp_path / "p.parquet"
    with pytest.raises(BatchInputError, match=r"missing model input column\(s\) \['hour'\]"):
        run_step(config, model="flights@production", input="flights@2013-03", output_uri=str(out), run_id="bad-1")
    assert not out.exists()
    store = open_store(config)
    [execution] = store.list_executions("bad-1")
    assert execution.state == "FAILED" and "['hour']" in execution.properties["error"]
    assert store.list_artifacts("Predictions") == []
    [step] = [s for s in store.lineage(store.find_artifact("Dataset", uri=broken.uri).id)]
    assert step.artifact.name == broken.id  # the dataset is known; the failed run produced nothing from it


def test_an_input_with_every_model_input_runs_without_feast(trained, tmp_path):
    """Nothing is looked up when the file holds every model input, so Feast is neither imported nor
    built (it was seconds of a short run's fixed cost), though the config enables the lookup and
    its feature repo was never applied here."""
    config, _, _ = trained
    source = tmp_path / "full.parquet"
    tiny_frame(40).to_parquet(source)
    code = """
import sys
from components.batch_predict.executor import run_step
from mlops.config import load_config
config = load_config(sys.argv[1])
assert config.serving.feature_lookup and config.features is not None
result = run_step(config, model="flights@production", input=sys.argv[2], output_uri=sys.argv[3], log=print)
print("rows", result.rows, "feast imported", "feast" in sys.modules)
"""
    out = tmp_path / "p.parquet"
    proc = run_python(Path(sys.executable), code, FLIGHTS_CONFIG, str(source), str(out), root=config.artifact_root)
    assert "rows 40 feast imported False" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert pd.read_parquet(out)["prediction"].notna().all()


def test_the_cli_process_ends_without_the_interpreter_teardown(trained, tmp_path):
    """`mlops predict batch` ends its process once the summary is out: exit handlers run, the
    teardown of every module (1-3 s after TensorFlow) does not; the output is complete."""
    config, _, _ = trained
    source, out = tmp_path / "full.parquet", tmp_path / "p.parquet"
    tiny_frame(30).to_parquet(source)
    code = """
import atexit, sys

class Teardown:
    def __del__(self):
        print("module teardown ran", flush=True)

kept_until_teardown = Teardown()
atexit.register(print, "exit handler ran")
source, out = sys.argv[1:]
sys.argv = ["mlops", "predict", "batch", "--model", "flights@production", "--input", source, "--output", out]
from cli.main import main
main()
"""
    proc = run_python(Path(sys.executable), code, str(source), str(out), root=config.artifact_root)
    summary, _, rest = proc.stdout.partition("\n}\n")
    assert json.loads(summary + "}")["rows"] == 30 and len(pd.read_parquet(out)) == 30
    assert rest.strip() == "exit handler ran", proc.stdout


def test_the_cli_imports_tensorflow_without_what_batch_never_uses(trained, tmp_path):
    """`mlops predict batch` imports TensorFlow without the optional imports TensorFlow makes at
    import time for Keras and the GCE cluster resolver (half the import's CPU time); the switches
    that skip them are gone afterwards (those modules import as usual) and the predictions are
    the model's."""
    from serving.handle import _TF_OPTIONAL_IMPORTS
    from tests.support.serving_models import tiny_probability

    config, _, _ = trained
    source, out = tmp_path / "full.parquet", tmp_path / "p.parquet"
    frame = tiny_frame(50)
    frame.to_parquet(source)
    code = """
import atexit, json, sys

WATCHED = ("tensorflow", "keras", "tf_keras", "googleapiclient", "matplotlib", "sklearn")

def report():
    loaded = {m: m in sys.modules for m in WATCHED}
    switches = sorted(name for name, module in sys.modules.items() if module is None)
    import googleapiclient
    print("REPORT " + json.dumps({"loaded": loaded, "switches": switches, "later import": googleapiclient.__name__}))

atexit.register(report)
source, out = sys.argv[1:]
sys.argv = ["mlops", "predict", "batch", "--model", "flights@production", "--input", source, "--output", out]
from cli.main import main
main()
"""
    proc = run_python(Path(sys.executable), code, str(source), str(out), root=config.artifact_root)
    report = json.loads(proc.stdout.split("REPORT ", 1)[1])
    assert report["loaded"] == {
        "tensorflow": True,
        "keras": False,
        "tf_keras": False,
        "googleapiclient": False,
        "matplotlib": False,
        "sklearn": False,
    }, proc.stderr[-3000:]
    assert not set(report["switches"]) & set(_TF_OPTIONAL_IMPORTS) and report["later import"] == "googleapiclient"
    rows = {c: frame[c].to_numpy() for c in ("hour", "distance", "temp")}
    rows.update({c: frame[c].astype(str).to_numpy(dtype=object) for c in ("carrier", "origin")})
    np.testing.assert_allclose(pd.read_parquet(out)["prediction"], tiny_probability(rows), rtol=1e-5)


# ---- end to end ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_batch_inference_pipeline_under_kfp_local(tmp_path, tiny_model):
    from mlops.metadata.store import open_store
    from mlops.registry.store import ModelRegistry
    from tests.support.serving_models import register, tiny_probability

    root = tmp_path / "artifacts"
    register(root, "flights", tiny_model)
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="test")
    df = tiny_frame(500)
    df.to_parquet(tmp_path / "input.parquet")
    env = {**os.environ, "MLOPS_ARTIFACT_ROOT": str(root)}
    cmd = MLOPS + [
        "run",
        "batch_inference",
        "--set",
        "serving.feature_lookup=false",
        "--param",
        "model=flights@production",
        "--param",
        f"input_data={tmp_path / 'input.parquet'}",
        "--param",
        "passthrough_columns=flight_key",
        "--param",
        "chunk_rows=128",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    [run_dir] = (root / "kfp-local").glob("batch-inference-*")
    step_log = "".join(p.read_text() for p in sorted(run_dir.glob("logs/*.log")))  # `mlops run` keeps it there
    assert "batch_predict: 500 rows" in step_log and "batch-predict" in log  # the step's line, the summary
    pointer = json.loads((run_dir / "batch-predict" / "predictions").read_text())
    assert pointer["rows"] == 500 and pointer["model"] == "flights@1"
    assert pointer["uri"].startswith(str(root / "predictions")) and pointer["uri"].endswith("predictions.parquet")
    got = pd.read_parquet(pointer["uri"])
    assert got["row_id"].tolist() == list(range(500)) and got["flight_key"].tolist() == df["flight_key"].tolist()
    expected = tiny_probability({c: df[c].to_numpy() for c in ("hour", "distance", "temp", "carrier", "origin")})
    np.testing.assert_allclose(got["prediction"], expected, rtol=1e-6, atol=1e-6)
    assert "500 rows" in (run_dir / "batch-predict" / "summary").read_text()

    config = config_for(root)
    [execution] = [e for e in open_store(config).list_executions() if e.component == "batch_predict"]
    run_id = Path(pointer["uri"]).parent.name  # the default output: <root>/predictions/<KFP run id>/
    assert execution.state == "COMPLETE" and execution.name == f"{run_id}/batch_predict"
    assert open_store(config).find_artifact("Predictions", uri=pointer["uri"]).properties["row_count"] == 500


_MATERIALIZE = """
import sys
from tests.support.serving_models import materialize_online
materialize_online(sys.argv[1], sys.argv[2], online_store="sqlite")
"""


@pytest.mark.integration
def test_cli_real_model_over_a_dataset_version_with_online_features(tmp_path, seed_root, q1_flights_model):
    """The Feast writes come from the serving environment (as in production); batch runs in the
    pipeline environment and reads that online store for the weather, plane and delay features
    the dataset version does not carry. The model is the session's trained flights model
    (q1_flights_model: the monitoring proof trains it anyway), registered here afresh."""
    from mlops.config import load_config
    from mlops.datasets.repository import DatasetRepository
    from mlops.features.store import online_features
    from mlops.metadata.store import open_store
    from mlops.registry.store import ModelRegistry
    from serving.batch import encode_column
    from serving.predictor import load_predictor
    from tests.support.serving_models import register

    root = tmp_path / "artifacts"
    shutil.copytree(seed_root / "datasets", root / "datasets")
    project = f"t{uuid.uuid4().hex[:12]}"
    run_python(SERVING_PY, _MATERIALIZE, str(root), project, root=root, timeout=600)
    model_dir = q1_flights_model.model_dir
    register(root, "flights", model_dir)
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="test")

    out = tmp_path / "predictions" / "2013-02.parquet"
    env = {**os.environ, "MLOPS_ARTIFACT_ROOT": str(root)}
    cmd = MLOPS + [
        "predict",
        "batch",
        "--set",
        f'features.project="{project}"',
        "--model",
        "flights@production",
        "--input",
        "flights@2013-02",
        "--output",
        str(out),
        "--passthrough",
        "dep_delay,tailnum,time_hour",
        "--chunk-rows",
        "4096",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    summary = json.loads(proc.stdout)

    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root), "features.project": project})
    [version] = DatasetRepository(str(root)).resolve("flights", "2013-02")
    got = pd.read_parquet(out)
    assert summary["rows"] == len(got) == version.row_count
    assert summary["input"]["dataset_versions"] == [version.id] and summary["model"]["version"] == "1"
    assert summary["model"]["runtime"] == "savedmodel"  # serving.runtime auto: one engine for every chunk
    lookup = summary["feature_lookup"]
    assert set(lookup["features"]) >= {"temp", "seats", "route_delay_mean_7d"} and lookup["time_column"] == "time_hour"
    # Rows with at least one default: 16% of February's tailnums are not in the planes table,
    # plus hours without a weather report; a broken lookup (wrong day key, time zone) defaults all.
    assert lookup["rows_with_defaults"] < 0.35 * len(got), lookup
    assert got["row_id"].tolist() == list(range(len(got)))
    assert got["prediction"].between(0, 1).all() and got["prediction"].std() > 0.01

    # The same rows predicted directly: features from the online store, keyed as serving keys them.
    data = pd.read_parquet(version.data_uri)
    sample = data.sample(200, random_state=0)
    predictor = load_predictor(model_dir)
    features = online_features(
        config,
        [
            {"origin": r.origin, "dest": r.dest, "carrier": r.carrier, "tailnum": r.tailnum, "time_hour": r.time_hour}
            for r in sample.itertuples()
        ],
    )
    rows = {}
    for spec in predictor.inputs:
        values = sample[spec.name].tolist() if spec.name in data.columns else [f[spec.name] for f in features]
        rows[spec.name] = encode_column(spec, pa.array(values))
    np.testing.assert_allclose(
        got["prediction"].to_numpy()[sample.index.to_numpy()], predictor.predict(rows), rtol=1e-5, atol=1e-6
    )
    assert got["dep_delay"].equals(data["dep_delay"]) and got["time_hour"].equals(data["time_hour"])

    store = open_store(config)
    steps = store.lineage(store.find_artifact("Predictions", uri=str(out)).id)
    assert {(s.consumed_as, s.artifact.name) for s in steps if s.depth == 1} == {
        ("dataset", version.id),
        ("model", "flights@1"),
    }

    # January was never materialized (the online store starts on February 1): every row would be
    # predicted on defaults, so the run fails and the February predictions stay as they were.
    before = out.read_bytes()
    proc = subprocess.run(
        [*cmd[: cmd.index("--input") + 1], "flights@2013-01", *cmd[cmd.index("--output") :]],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    # exit 2: an InvalidInput (mlops.errors), the input names a range the store does not serve
    assert proc.returncode == 2 and "not one of the" in proc.stderr and "materialized" in proc.stderr, proc.stderr[
        -3000:
    ]
    assert "Traceback" not in proc.stderr and out.read_bytes() == before
