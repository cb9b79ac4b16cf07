"""The content-keyed step cache (mlops.steps.run_cached): what makes a hit, what makes a miss."""

import sys
from pathlib import Path

import pytest

from mlops import steps
from mlops.config import load_config
from mlops.steps import FINGERPRINT_FILE, StepCache, cache_key, run_cached, source_version
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
    r1, cached1 = run_cached(
        config,
        "trainer",
        "v1",
        sections=["model"],
        inputs={"x": a},
        outputs={"model": out1},
        params={},
        work=work_into(out1),
        log=logs.append,
    )
    r2, cached2 = run_cached(
        config,
        "trainer",
        "v1",
        sections=["model"],
        inputs={"x": a},
        outputs={"model": out2},
        params={},
        work=work_into(out2),
        log=logs.append,
    )
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
        run_cached(
            config,
            "s",
            "v1",
            sections=[],
            inputs={"x": a},
            outputs={"o": out},
            params={},
            work=lambda: calls.append(1) or {},
            enabled=False,
        )
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
    assert v != source_version("y", "mlops.steps")
    with pytest.raises(ImportError):
        source_version("x", "mlops.no_such_module")


@pytest.fixture
def fake_project(tmp_path, monkeypatch):
    """A package `fakeproj` on sys.path, treated as a project package: entry -> helper (imported
    inside a function, as this project imports its heavy dependencies) -> deep (`from pkg import`)."""
    pkg = tmp_path / "fakeproj"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "entry.py").write_text("def run():\n    from fakeproj.helper import work\n    return work()\n")
    (pkg / "helper.py").write_text("from fakeproj import deep\n\ndef work():\n    return deep.VALUE\n")
    (pkg / "deep.py").write_text("import numpy\nVALUE = 1\n")
    (pkg / "unrelated.py").write_text("VALUE = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] == "fakeproj"]:  # another test's copy
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(steps, "PROJECT_PACKAGES", (*steps.PROJECT_PACKAGES, "fakeproj"))
    return pkg


def test_code_version_follows_the_import_graph(fake_project):
    assert set(steps.import_closure("fakeproj.entry")) == {
        "fakeproj",
        "fakeproj.entry",
        "fakeproj.helper",
        "fakeproj.deep",
    }
    before = source_version("step", "fakeproj.entry")
    (fake_project / "unrelated.py").write_text("VALUE = 3\n")
    assert source_version("step", "fakeproj.entry") == before  # not imported: not part of the version
    (fake_project / "deep.py").write_text("import numpy\nVALUE = 10\n")  # two imports away
    assert source_version("step", "fakeproj.entry") != before


def test_the_code_version_imports_nothing(fake_project):
    """Reading the import graph runs no module: `from fakeproj.deep import VALUE` once made
    find_spec import fakeproj.deep (for mlops.dask_runner that was Apache Beam, seconds at each
    import of an executor, e.g. in `mlops monitor run`)."""
    (fake_project / "helper.py").write_text("from fakeproj.deep import VALUE\n\ndef work():\n    return VALUE\n")
    (fake_project / "deep.py").write_text("raise RuntimeError('fakeproj.deep was imported')\n")
    assert set(steps.import_closure("fakeproj.entry")) == {
        "fakeproj",
        "fakeproj.entry",
        "fakeproj.helper",
        "fakeproj.deep",
    }
    assert not [m for m in sys.modules if m.split(".")[0] == "fakeproj"]


def test_a_changed_helper_two_imports_away_is_a_cache_miss(config, tmp_path, fake_project):
    a = make_input(tmp_path, "in", "rows")
    calls = []

    def run(out):
        version = source_version("step", "fakeproj.entry")
        return run_cached(
            config,
            "step",
            version,
            sections=[],
            inputs={"x": a},
            outputs={"o": str(tmp_path / out)},
            params={},
            work=lambda: calls.append(out) or {},
        )[1]

    assert run("r1") is False and run("r2") is True
    (fake_project / "deep.py").write_text("import numpy\nVALUE = 10\n")
    assert run("r3") is False and calls == ["r1", "r3"]


def test_step_code_versions_cover_what_the_steps_import():
    """The Trainer's TFLite parity comes from mlops.modeling.predictions and tflite_predictor, which
    its worker imports; the Evaluator's metrics from modules beyond its own file."""
    from components.trainer.executor import WORKER_MODULE

    trainer = steps.import_closure("components.trainer.executor", WORKER_MODULE)
    assert {
        "mlops.modeling.predictions",
        "mlops.modeling.tflite_predictor",
        "mlops.modeling.model",
        "mlops.modeling.preprocessing",
    } <= set(trainer)
    assert len(steps.import_closure("components.evaluator.executor")) > 3


def test_concurrent_identical_stores_leave_one_complete_entry(config, tmp_path):
    import threading

    cache = StepCache(config)
    outs = []
    for i in range(6):
        out = tmp_path / f"out{i}"
        (out / "sub").mkdir(parents=True)
        for j in range(20):
            (out / "sub" / f"f{j}").write_text(f"payload {j}")
        outs.append(str(out))
    errors = []

    def store(out):
        try:
            cache.store("step", "k" * 32, {"o": out}, {"n": 1})
        except Exception as e:  # noqa: BLE001  (any failure of a concurrent store is the bug)
            errors.append(e)

    threads = [threading.Thread(target=store, args=(out,)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entry = Path(cache.root, "step", "k" * 32)
    assert sorted(p.name for p in (entry / "o" / "sub").iterdir()) == sorted(f"f{j}" for j in range(20))
    assert [p.name for p in entry.parent.iterdir() if p.name.startswith(".tmp-")] == []  # no staging left
    restored = tmp_path / "restored"
    assert cache.restore("step", "k" * 32, {"o": str(restored)}) == {"n": 1}


def test_feature_definitions_fingerprint_changes_with_the_repo(tmp_path):
    import shutil

    from mlops.features.store import definitions_fingerprint
    from tests.support.fixtures import REPO

    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = load_config(FLIGHTS_CONFIG, overrides={"features.repo": str(repo)})
    before = definitions_fingerprint(cfg)
    (repo / "definitions.py").write_text((repo / "definitions.py").read_text() + "\n# a changed view\n")
    assert definitions_fingerprint(cfg) != before
