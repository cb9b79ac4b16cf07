"""Compile KFP pipelines to IR YAML, check IR strictly, and run pipelines locally (kfp.local).

Local runs use kfp.local's SubprocessRunner without a venv: each step runs as a subprocess of
the pipeline environment's interpreter, importing the installed project exactly as the
container image does, with the pipeline root under the artifact root.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from mlops.config import join_uri
from mlops.envs import REPO_ROOT
from mlops.errors import NotFound

# name -> "module:function"
PIPELINES = {
    "ingest": "pipelines.ingest:ingest_pipeline",
    "training": "pipelines.training:training_pipeline",
    "batch_inference": "pipelines.batch_inference:batch_inference_pipeline",
}
COMPILED_DIR = REPO_ROOT / "pipelines" / "compiled"


class PipelineNotFound(NotFound):
    """No pipeline of that name (the message lists the known ones)."""


def pipeline_func(name: str):
    try:
        module, func = PIPELINES[name].split(":")
    except KeyError:
        raise PipelineNotFound(f"unknown pipeline {name}; known: {', '.join(sorted(PIPELINES))}") from None
    return getattr(importlib.import_module(module), func)


def compile_pipeline(name: str, out_dir: str | Path = COMPILED_DIR) -> Path:
    from kfp import compiler

    out = Path(out_dir) / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{name}.yaml")
    compiler.Compiler().compile(pipeline_func(name), str(tmp))
    tmp.replace(out)
    return out


def load_ir_strict(path: str | Path):
    """Parses compiled IR with kfp's protobuf schema, rejecting unknown fields (as the KFP API
    server does), plus any kfp-kubernetes executor configs. Returns the PipelineSpec."""
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    docs = list(yaml.safe_load_all(Path(path).read_text()))
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(docs[0], spec, ignore_unknown_fields=False)
    for platform_doc in docs[1:]:
        platform = pipeline_spec_pb2.PlatformSpec()
        json_format.ParseDict(platform_doc, platform, ignore_unknown_fields=False)
        k8s = platform.platforms.get("kubernetes")
        if k8s is not None:
            from kfp.kubernetes import kubernetes_executor_config_pb2 as kec

            for executor, cfg in k8s.deployment_spec.executors.items():
                json_format.ParseDict(json_format.MessageToDict(cfg), kec.KubernetesExecutorConfig(),
                                      ignore_unknown_fields=False)
    return spec


def run_local(name: str, artifact_root: str, arguments: dict) -> object:
    """Runs a pipeline with kfp.local in this interpreter's environment; returns its outputs."""
    import kfp.local

    pipeline_root = join_uri(artifact_root, "kfp-local")
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root,
                   raise_on_error=True)
    return pipeline_func(name)(**arguments)
