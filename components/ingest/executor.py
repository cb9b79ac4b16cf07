"""ExampleGen's first half: ingest a dataset version and record it in ML Metadata.

Plain Python on paths and config; the KFP interface in component.py only maps its parameters
and output artifact to this function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlops.config import PlatformConfig
from mlops.datasets.ingest import ingest
from mlops.steps import Location, RunContext, StepResult, record_step

COMPONENT = "ingest"


@dataclass
class IngestOutput:
    version_id: str
    uri: str
    row_count: int
    created: bool
    pointer: dict


def dataset_ref(version):
    from mlops.metadata.store import ArtifactRef

    return ArtifactRef(
        "Dataset",
        version.uri,
        name=version.id,
        properties={
            "name": version.name,
            "version_id": version.id,
            "span": version.span or "",
            "row_count": version.row_count,
            "content_hash": version.manifest["content_hash"],
        },
    )


def run(config: PlatformConfig, *, span: str = "", pipeline: str, run_id: str) -> IngestOutput:
    result = ingest(config, span=span or None)
    version = result.dataset
    outputs = {"dataset": [dataset_ref(version)]}
    for table_version, _ in result.feature_tables:
        outputs.setdefault("feature_tables", []).append(dataset_ref(table_version))
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component=COMPONENT,
        outputs=outputs,
        properties={"code_version": COMPONENT + "/1"},
    )
    # The KFP artifact is a pointer to the immutable version in the dataset repository, so a
    # dataset is stored once however many runs use it.
    pointer = {
        "version_id": version.id,
        "uri": version.uri,
        "row_count": version.row_count,
        "span": version.span,
        "feature_tables": {v.name: v.id for v, _ in result.feature_tables},
    }
    return IngestOutput(version.id, version.uri, version.row_count, result.created, pointer)


def write_pointer(path: str, pointer: dict) -> None:
    from mlops.storage import write_json_atomic

    write_json_atomic(path, pointer)
    json.dumps(pointer)  # fail here, not in KFP, if it is not serialisable


def execute(
    config: PlatformConfig,
    inputs: dict[str, Location],
    outputs: dict[str, Location],
    context: RunContext,
    *,
    span: str = "",
) -> StepResult:
    """The step contract (mlops.steps): no artifact inputs (the configured source is read);
    outputs {"dataset"}: a pointer (JSON) to the immutable version in the dataset repository."""
    from dataclasses import asdict

    out = run(config, span=span, pipeline=context.pipeline, run_id=context.run_id)
    write_pointer(outputs["dataset"].path, out.pointer)
    return StepResult(values=asdict(out), cached=not out.created)
