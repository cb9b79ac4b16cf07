"""The config schema: the default config loads; bad configs fail naming file and field."""

from pathlib import Path

import pytest
import yaml

from mlops.config import ConfigError, load_config
from tests.support.fixtures import FLIGHTS_CONFIG


def write(tmp_path: Path, doc: dict, name="c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.fixture
def flights_doc() -> dict:
    return yaml.safe_load(FLIGHTS_CONFIG.read_text())


def test_default_config_loads_with_paths_resolved(artifact_root):
    cfg = load_config(FLIGHTS_CONFIG)
    assert cfg.artifact_root == str(artifact_root)  # ${MLOPS_ARTIFACT_ROOT:-...} honoured
    assert cfg.dataset.label.column == "is_delayed"
    assert Path(cfg.features.repo).is_absolute() and Path(cfg.features.repo).name == "feature_repo"
    assert cfg.metadata_sqlite_path.endswith("metadata/mlmd.sqlite")


def test_default_falls_back_relative_to_the_file(monkeypatch):
    monkeypatch.delenv("MLOPS_ARTIFACT_ROOT", raising=False)
    cfg = load_config(FLIGHTS_CONFIG)
    assert cfg.artifact_root == str((FLIGHTS_CONFIG.parent / ".." / "artifacts").resolve())


def test_content_hash_ignores_formatting_but_not_values(tmp_path, flights_doc, artifact_root):
    a = load_config(write(tmp_path, flights_doc, "a.yaml"))
    (tmp_path / "a.yaml").write_text("# reformatted\n" + yaml.safe_dump(flights_doc, default_flow_style=True))
    assert load_config(tmp_path / "a.yaml").content_hash() == a.content_hash()
    flights_doc["model"]["epochs"] = 9
    c = load_config(write(tmp_path, flights_doc, "a.yaml"))
    assert c.content_hash() != a.content_hash()
    assert load_config(write(tmp_path, flights_doc, "a.yaml")).content_hash() == c.content_hash()


def test_unknown_key_names_file_and_field(tmp_path, flights_doc):
    flights_doc["model"]["epoch"] = 3
    path = write(tmp_path, flights_doc)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and "model.epoch: unknown key" in str(e.value)


def test_wrong_type_names_field(tmp_path, flights_doc):
    flights_doc["model"]["batch_size"] = "large"
    with pytest.raises(ConfigError, match=r"model\.batch_size"):
        load_config(write(tmp_path, flights_doc))


def test_missing_required_field(tmp_path, flights_doc):
    del flights_doc["dataset"]["label"]
    with pytest.raises(ConfigError, match=r"dataset\.label: Field required"):
        load_config(write(tmp_path, flights_doc))


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/config.yaml")


def test_split_ratios_must_sum_to_one(tmp_path, flights_doc):
    flights_doc["split"]["train"] = 0.9
    with pytest.raises(ConfigError, match=r"split: .*must be 1.0"):
        load_config(write(tmp_path, flights_doc))


def test_slice_on_unknown_column(tmp_path, flights_doc):
    flights_doc["evaluation"]["slices"] = [["airline"]]
    with pytest.raises(ConfigError, match=r"evaluation.slices: 'airline'"):
        load_config(write(tmp_path, flights_doc))


def test_unset_env_var_without_default(tmp_path, flights_doc, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    flights_doc["artifact_root"] = "${NOPE_NOT_SET}"
    with pytest.raises(ConfigError, match=r"artifact_root: environment variable \$\{NOPE_NOT_SET\}"):
        load_config(write(tmp_path, flights_doc))


def test_empty_env_var_takes_the_default_as_in_the_shell(tmp_path, flights_doc, monkeypatch):
    monkeypatch.setenv("MLOPS_TEST_ROOT", "")
    flights_doc["artifact_root"] = "${MLOPS_TEST_ROOT:-/tmp/mlops-default-root}"
    assert load_config(write(tmp_path, flights_doc)).artifact_root == "/tmp/mlops-default-root"
    monkeypatch.setenv("MLOPS_TEST_ROOT", "/tmp/mlops-set-root")
    assert load_config(write(tmp_path, flights_doc)).artifact_root == "/tmp/mlops-set-root"


def test_a_bad_override_names_the_override_not_the_file():
    with pytest.raises(ConfigError, match=r"^override model\.learnig_rate=0\.1: model\.learnig_rate: unknown key") as e:
        load_config(FLIGHTS_CONFIG, overrides={"model.learnig_rate": 0.1})
    assert e.value.override == "model.learnig_rate"


def test_overrides_are_validated(tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"model.epochs": 1})
    assert cfg.model.epochs == 1
    with pytest.raises(ConfigError, match=r"model\.epochs"):
        load_config(FLIGHTS_CONFIG, overrides={"model.epochs": 0})


def test_invalid_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("project: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
