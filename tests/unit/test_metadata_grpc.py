"""`metadata.backend: grpc` (KFP's metadata-grpc-service on a cluster) for real: the platform's store
over ML Metadata's gRPC service interface, served on 127.0.0.1 by real MLMD on SQLite."""

from __future__ import annotations

import socket
import time

import pytest

from mlops.config import load_config
from mlops.metadata.store import ArtifactRef, MetadataServiceUnavailable, MetadataStore, connection_config, open_store
from mlops.steps import record_step
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.mlmd_grpc_server import MlmdGrpcServer


def grpc_config(port: int):
    return load_config(
        FLIGHTS_CONFIG, overrides={"metadata.backend": "grpc", "metadata.host": "127.0.0.1", "metadata.port": port}
    )


def test_steps_record_through_the_grpc_service(artifact_root, tmp_path):
    sqlite = tmp_path / "behind-the-service.sqlite"
    server = MlmdGrpcServer(sqlite)
    with server as port:
        config = grpc_config(port)
        store = open_store(config)
        store.start_run("training", "kfp-run-1", {"runner": "kfp"})
        dataset = ArtifactRef("Dataset", "s3://mlpipeline/mlops/datasets/flights/v1", name="flights@v1")
        record_step(
            config, pipeline="training", run_id="kfp-run-1", component="example_gen", inputs={"dataset": [dataset]}
        )
        store.finish_run("kfp-run-1", "COMPLETE")
        [execution] = open_store(config).list_executions("kfp-run-1")
    assert execution.component == "example_gen" and execution.state == "COMPLETE"
    assert {"PutExecution", "GetContextByTypeAndName"} <= set(server.calls)
    # what the service stored is in its database: read it directly, without the service
    direct = MetadataStore(connection_config(config.metadata.model_copy(update={"backend": "sqlite"}), str(sqlite)))
    assert [a.name for a in direct.list_artifacts("Dataset")] == ["flights@v1"]
    assert [c.name for c in direct.list_contexts("PipelineRun")] == ["kfp-run-1"]


def test_every_call_has_a_deadline():
    connection = connection_config(grpc_config(8080).metadata, "")
    assert connection.HasField("client_timeout_sec") and 0 < connection.client_timeout_sec <= 60


def test_unreachable_service_is_one_line_unavailable(artifact_root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening
        started = time.monotonic()
        with pytest.raises(MetadataServiceUnavailable, match=f"127.0.0.1:{port}"):
            open_store(grpc_config(port))
    assert time.monotonic() - started < 10
