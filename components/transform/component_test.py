"""The KFP interfaces of Transform and Trainer compile with the artifact types the pipeline wires."""

from kfp import compiler, dsl

from components.trainer.component import trainer
from components.transform.component import transform


def test_transform_and_trainer_components_compile(tmp_path):
    @dsl.pipeline(name="transform-trainer")
    def pipe(config_path: str = "configs/flights.yaml"):
        examples = dsl.importer(artifact_uri="memory://examples", artifact_class=dsl.Dataset)
        common = dict(config_path=config_path, config_overrides="", artifact_root="", pipeline_name="p", run_id="r")
        t = transform(**common, examples=examples.output)  # schema is optional
        trainer(**common, transform_graph=t.outputs["transform_graph"], examples=examples.output)

    out = tmp_path / "pipe.yaml"
    compiler.Compiler().compile(pipe, str(out))
    import yaml

    spec = yaml.safe_load(out.read_text())
    comps = spec["components"]
    t_in = comps["comp-transform"]["inputDefinitions"]["artifacts"]
    assert t_in["examples"]["artifactType"]["schemaTitle"] == "system.Dataset"
    assert t_in["schema"]["isOptional"] is True
    assert (
        comps["comp-transform"]["outputDefinitions"]["artifacts"]["transform_graph"]["artifactType"]["schemaTitle"]
        == "system.Artifact"
    )
    t_out = comps["comp-trainer"]["outputDefinitions"]["artifacts"]
    assert t_out["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert t_out["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
