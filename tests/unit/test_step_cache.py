"""The content-keyed step cache (mlops.steps.run_cached): what makes a hit, what makes a miss."""

from pathlib import Path

import pytest

from mlops.config import load_config
from mlops.steps import FINGERPRINT_FILE, cache_key, run_cached, source_version

from tests.support.fixtures import FLIGHTS_CONFIG


@pytest.fixture
def config(artifact_root):
    return load_config(FLIGHTS_CONFIG)


def make_input(tmp_path: Path, name: str, content: str) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "data.txt").write_text(content)
    return str(d)


def test_key_depends_on_inputs_sections_params_and_code(config, tmp_path):
    a = make_input(tmp_path, "a", "one")
    key = cache_key("step", "v1", config, ["model"], {"x": a}, {"p": 1})
    assert key == cache_key("step", "v1", config, ["model"], {"x": a}, {"p": 1})
    assert key != cache_key("step", "v2", config, ["model"], {"x": a}, {"p": 1})
    assert key != cache_key("step", "v1", config, ["model"], {"x": a}, {"p": 2})
    other_model = load_config(FLIGHTS_CONFIG, overrides={"model.epochs": 9})
    assert key != cache_key("step", "v1", other_model, ["model"], {"x": a}, {"p": 1})
    other_eval = load_config(FLIGHTS_CONFIG, overrides={"evaluation.min_auc": 0.9})
    assert key == cache_key("step", "v1", other_eval, ["model"], {"x": a}, {"p": 1})  # section not read
    (Path(a) / "data.txt").write_text("two")
    assert key != cache_key("step", "v1", config, ["model"], {"x": a}, {"p": 1})


def test_hit_restores_outputs_with_paths_rebased_and_says_so(config, tmp_path):
    a = make_input(tmp_path, "in", "rows")
    calls, logs = [], []

    def work_into(out):
        def work():
            calls.append(out)
            Path(out, "model.bin").write_text("weights")
            return {"model_file": f"{out}/model.bin", "auc": 0.7}
        return work

    out1, out2 = str(tmp_path / "run1" / "model"), str(tmp_path / "run2" / "model")
    r1, cached1 = run_cached(config, "trainer", "v1", sections=["model"], inputs={"x": a}, outputs={"model": out1},
                             params={}, work=work_into(out1), log=logs.append)
    r2, cached2 = run_cached(config, "trainer", "v1", sections=["model"], inputs={"x": a}, outputs={"model": out2},
                             params={}, work=work_into(out2), log=logs.append)
    assert (cached1, cached2) == (False, True) and calls == [out1]
    assert r2 == {"model_file": f"{out2}/model.bin", "auc": 0.7}  # paths point at this run's outputs
    assert Path(out2, "model.bin").read_text() == "weights"
    assert Path(out2, FINGERPRINT_FILE).read_text() == Path(out1, FINGERPRINT_FILE).read_text()
    assert any(line.startswith("[cache hit] trainer") for line in logs)


def test_disabled_cache_always_runs(config, tmp_path):
    a = make_input(tmp_path, "in", "rows")
    calls = []
    for run in ("r1", "r2"):
        out = str(tmp_path / run)
        run_cached(config, "s", "v1", sections=[], inputs={"x": a}, outputs={"o": out}, params={},
                   work=lambda: calls.append(1) or {}, enabled=False)
    assert len(calls) == 2


def test_downstream_key_follows_upstream_fingerprint(config, tmp_path):
    """A step's output fingerprint is derived from its key: change upstream, and downstream misses."""
    a = make_input(tmp_path, "in", "v1")
    up1 = str(tmp_path / "up1")
    run_cached(config, "up", "v1", sections=[], inputs={"x": a}, outputs={"o": up1}, params={}, work=lambda: {})
    k1 = cache_key("down", "v1", config, [], {"upstream": up1})
    (Path(a) / "data.txt").write_text("v2")
    up2 = str(tmp_path / "up2")
    run_cached(config, "up", "v1", sections=[], inputs={"x": a}, outputs={"o": up2}, params={}, work=lambda: {})
    assert cache_key("down", "v1", config, [], {"upstream": up2}) != k1


def test_source_version_tracks_module_source():
    v = source_version("x", "mlops.steps")
    assert v.startswith("x/") and v == source_version("x", "mlops.steps")
    assert v != source_version("x", "mlops.steps", "mlops.config")
    with pytest.raises(ImportError):
        source_version("x", "mlops.no_such_module")
