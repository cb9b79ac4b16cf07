"""KFP mechanics every pipeline relies on: compile to IR, strict parse, run under kfp.local."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops.config import load_config
from mlops.metadata.store import open_store
from pipelines import runner as orchestration
from tests.support.fixtures import FLIGHTS_CONFIG, REPO

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(orchestration.PIPELINES))
def test_compiles_to_strict_ir_and_committed_copy_is_current(name, tmp_path):
    path = orchestration.compile_pipeline(name, tmp_path)
    spec = orchestration.load_ir_strict(path)
    assert spec.pipeline_info.name == name.replace("_", "-")  # KFP names allow no underscores
    for executor in spec.deployment_spec.fields["executors"].struct_value.fields.values():
        container = executor.struct_value.fields["container"].struct_value.fields
        command = " ".join(v.string_value for v in container["command"].list_value.values)
        assert "pip install" not in command  # install_kfp_package=False: the image has everything
    committed = orchestration.COMPILED_DIR / f"{name}.yaml"
    assert committed.exists(), f"run `mlops pipeline compile` and commit {committed}"
    # all documents: the pipeline spec and, for a cluster, the kubernetes platform spec (secrets, node selectors)
    assert list(yaml.safe_load_all(committed.read_text())) == list(yaml.safe_load_all(path.read_text())), (
        f"{committed} is stale: run `mlops pipeline compile`"
    )


def test_strict_parse_rejects_unknown_fields(tmp_path):
    path = orchestration.compile_pipeline("ingest", tmp_path)
    doc = next(yaml.safe_load_all(path.read_text()))  # the pipeline spec (a platform spec may follow)
    doc["root"]["surprise"] = 1
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception, match="surprise"):
        orchestration.load_ir_strict(path)


def test_ingest_pipeline_runs_locally_and_records_mlmd(artifact_root):
    """`mlops pipeline run ingest` = kfp.local SubprocessRunner, pipeline root under the artifact root."""
    cmd = [sys.executable, "-m", "cli", "run", "ingest", "--param", "span=2013-07"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = load_config(FLIGHTS_CONFIG)
    store = open_store(cfg)
    [execution] = store.list_executions()
    assert execution.state == "COMPLETE" and execution.component == "ingest"
    datasets = [a for a in store.list_artifacts("Dataset") if a.properties.get("span") == "2013-07"]
    assert len(datasets) == 1
    # the KFP output artifact points at the immutable version
    pointers = list(Path(artifact_root, "kfp-local").glob("*/ingest/dataset"))
    assert len(pointers) == 1
    assert json.loads(pointers[0].read_text())["version_id"] == datasets[0].name
    runs = store.list_contexts("mlops.PipelineRun")
    assert [r.name for r in runs] == [execution.name.split("/")[0]]
