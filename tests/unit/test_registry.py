"""The model registry on real files: registration, aliases, resolution, refusals, crash safety
and concurrent writers (separate processes), plus an object-store (memory://) registry."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from mlops import artifacts, storage
from mlops.registry import (
    LockTimeout,
    ModelRegistry,
    NoRollbackTarget,
    NotBlessedError,
    RegistryError,
    RegistryNotFound,
    cli_ops,
    locking,
)
from mlops.registry import store as registry_store
from tests.support.registry_fakes import FEATURES, make_model_dir, register


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(str(tmp_path / "artifacts"))


def test_model_file_names_match_the_artifact_contract():
    assert registry_store.MODEL_FILES == {
        "serving_model": artifacts.SERVING_MODEL,
        "tflite": artifacts.TFLITE_MODEL,
        "tflite_preprocessing": artifacts.TFLITE_PREPROCESSING,
        "training_info": artifacts.TRAINING_INFO,
    }


def test_register_copies_model_files_writes_manifest_and_sets_staging(registry, tmp_path):
    v = register(registry, make_model_dir(tmp_path), actor="ci@runner")
    assert (v.name, v.version, v.selector) == ("flights", 1, "flights@1")
    root = tmp_path / "artifacts" / "registry" / "flights" / "versions" / "1"
    assert v.uri == str(root)
    assert (root / "serving_model" / "saved_model.pb").read_bytes() == b"pb-m"
    assert (root / "serving_model" / "variables" / "variables.index").is_file()
    assert (root / "model.tflite").is_file() and (root / "training.json").is_file()
    assert not (root / "logs").exists() and not (root / "tflite_preprocessing.json").exists()
    assert v.serving_model_uri == str(root / "serving_model") and v.tflite_uri == str(root / "model.tflite")
    assert v.file_uri("tflite_preprocessing") is None and v.blessed

    m = json.loads((root / "manifest.json").read_text())
    assert m == v.manifest
    assert m["version"] == 1 and m["name"] == "flights" and m["created_at"].endswith("+00:00")
    assert m["model_paths"] == {
        "serving_model": "serving_model",
        "tflite": "model.tflite",
        "tflite_preprocessing": None,
        "training_info": "training.json",
    }
    assert m["metrics"] == {"auc": 0.71, "example_count": 1000}
    assert m["blessing"] == {"blessed": True, "reason": "auc 0.71 >= 0.65"}
    assert (m["dataset_versions"], m["config_hash"], m["git_commit"]) == (
        ["flights-abc123def456"],
        "cfg123",
        "deadbeef",
    )
    assert (m["task"], m["output_key"]) == ("binary_classification", "probability")
    assert m["features"] == [{"name": "distance", "dtype": "float32"}, {"name": "carrier", "dtype": "string"}]
    assert {f["path"] for f in m["files"]} == {
        "serving_model/saved_model.pb",
        "model.tflite",
        "training.json",
        "serving_model/variables/variables.index",
    }
    assert len(m["content_hash"]) == 64 and m["registered_by"] == "ci@runner" and m["mlmd_artifact_id"] is None

    assert registry.aliases("flights") == {"staging": 1}
    assert json.loads((root.parents[1] / "aliases.json").read_text()) == {"aliases": {"staging": 1}, "history_seq": 1}
    [move] = registry.history("flights")
    assert (move.seq, move.alias, move.from_version, move.to_version, move.action, move.by) == (
        1,
        "staging",
        None,
        1,
        "register",
        "ci@runner",
    )
    assert registry.list_models() == ["flights"]


def test_versions_are_consecutive_numbers_and_staging_follows_the_newest(registry, tmp_path):
    made = [register(registry, make_model_dir(tmp_path, str(i)), extra={"run": i}) for i in range(3)]
    assert [v.version for v in made] == [1, 2, 3]
    assert [v.version for v in registry.versions("flights")] == [1, 2, 3]
    assert registry.versions("flights")[1].manifest["extra"] == {"run": 1}
    assert registry.aliases("flights") == {"staging": 3}
    assert [(m.from_version, m.to_version) for m in registry.history("flights")] == [(None, 1), (1, 2), (2, 3)]


def test_promote_and_resolve_every_selector_form(registry, tmp_path):
    for i in range(3):
        register(registry, make_model_dir(tmp_path, str(i)))
    assert registry.resolve("flights").version == 3  # no production yet: staging
    move = registry.promote("flights", 2, reason="canary looked good", actor="alice")
    assert (move.seq, move.alias, move.from_version, move.to_version, move.action, move.reason, move.by) == (
        4,
        "production",
        None,
        2,
        "promote",
        "canary looked good",
        "alice",
    )
    assert registry.aliases("flights") == {"production": 2, "staging": 3}
    assert registry.resolve("flights").version == 2  # production wins
    assert registry.resolve("flights@production").version == 2
    assert registry.resolve("flights@staging").version == 3
    assert registry.resolve("flights@1").version == 1
    assert registry.resolve("flights@latest").version == 3
    assert registry.get("flights", "3").version == 3
    registry.promote("flights", "3", alias="canary")
    assert registry.resolve("flights@canary").version == 3
    again = registry.promote("flights", 2)  # already there: nothing recorded
    assert not again.recorded and len(registry.history("flights")) == 5


def test_resolve_errors_name_what_exists(registry, tmp_path):
    with pytest.raises(RegistryNotFound, match=r"no model named 'flights'.*models: none yet"):
        registry.resolve("flights")
    register(registry, make_model_dir(tmp_path))
    with pytest.raises(RegistryNotFound, match=r"no model named 'taxis'.*models: flights"):
        registry.resolve("taxis@1")
    with pytest.raises(RegistryNotFound, match=r"model 'flights' has no version 7 \(versions: 1\)"):
        registry.resolve("flights@7")
    with pytest.raises(RegistryNotFound, match=r"model 'flights' has no alias 'production' \(aliases: staging -> 1\)"):
        registry.resolve("flights@production")
    for bad in ("", "flights@", "Flights", "flights@1@2", "a/b"):
        with pytest.raises(RegistryError, match="invalid model"):
            registry.resolve(bad)
    with pytest.raises(RegistryError, match="invalid version 'x'"):
        registry.get("flights", "x")
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.promote("flights", 1, alias="7")


def test_unblessed_model_is_not_registered(registry, tmp_path):
    with pytest.raises(
        NotBlessedError,
        match=r"refusing to register model 'flights' from .*trainer-m: "
        r"it is not blessed \(auc too low\)",
    ):
        register(registry, make_model_dir(tmp_path), blessing={"blessed": False, "reason": "auc too low"})
    with pytest.raises(NotBlessedError, match="not blessed"):
        register(registry, tmp_path / "trainer-m", blessing={"reason": "no verdict"})
    assert not (tmp_path / "artifacts" / "registry").exists()


def test_registration_needs_model_files_and_valid_metadata(registry, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match="holds neither serving_model/ nor model.tflite"):
        register(registry, empty)
    with pytest.raises(RegistryError, match="distinct names"):
        register(registry, make_model_dir(tmp_path), features=FEATURES + FEATURES)
    with pytest.raises(RegistryError, match="metrics: object is not JSON"):
        register(registry, tmp_path / "trainer-m", metrics={"auc": object()})


def test_numpy_metrics_and_tflite_only_models(registry, tmp_path):
    d = make_model_dir(tmp_path, tflite=True)
    shutil.rmtree(d / "serving_model")
    v = register(registry, d, metrics={"auc": np.float32(0.5), "n": np.int64(3)})
    assert v.manifest["metrics"] == {"auc": 0.5, "n": 3}
    assert v.serving_model_uri is None and v.tflite_uri.endswith("model.tflite")


def test_promoting_an_unblessed_or_unknown_version_is_refused(registry, tmp_path):
    register(registry, make_model_dir(tmp_path, "1"))
    v2 = register(registry, make_model_dir(tmp_path, "2"))
    # A version that is in the store but not blessed (copied by hand, older tool): still refused.
    manifest = Path(v2.uri) / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["blessing"] = {"blessed": False, "reason": "auc dropped by 0.03"}
    manifest.write_text(json.dumps(doc))
    with pytest.raises(
        NotBlessedError,
        match=r"refusing to promote flights@2 to production: version 2 of model "
        r"'flights' is not blessed \(auc dropped by 0.03\)",
    ):
        registry.promote("flights", 2)
    with pytest.raises(RegistryNotFound, match=r"model 'flights' has no version 9 \(versions: 1, 2\)"):
        registry.promote("flights", 9)
    with pytest.raises(RegistryNotFound, match="no model named 'taxis'"):
        registry.promote("taxis", 1)
    assert "production" not in registry.aliases("flights")


def test_rollback_undoes_promotions_one_by_one(registry, tmp_path):
    for i in range(3):
        register(registry, make_model_dir(tmp_path, str(i)))
    with pytest.raises(NoRollbackTarget, match="flights@production: nothing to roll back to: it was never set"):
        registry.rollback("flights")
    for version in (1, 2, 3):
        registry.promote("flights", version, reason=f"release {version}")
    move = registry.rollback("flights", reason="p99 latency regression", actor="oncall")
    assert (move.from_version, move.to_version, move.action, move.reason, move.by) == (
        3,
        2,
        "rollback",
        "p99 latency regression",
        "oncall",
    )
    assert registry.resolve("flights@production").version == 2
    assert registry.rollback("flights").to_version == 1  # an undo stack, not a toggle back to 3
    with pytest.raises(NoRollbackTarget, match="points at version 1 since its first move"):
        registry.rollback("flights")
    registry.promote("flights", 3)
    assert registry.rollback("flights").to_version == 1
    assert registry.rollback("flights", alias="staging").to_version == 2  # any alias has a history
    rows = cli_ops.history(str(tmp_path / "artifacts"), "flights")
    assert [(r["alias"], r["action"], r["from"], r["to"]) for r in rows][-5:] == [
        ("production", "rollback", 3, 2),
        ("production", "rollback", 2, 1),
        ("production", "promote", 1, 3),
        ("production", "rollback", 3, 1),
        ("staging", "rollback", 3, 2),
    ]
    assert all(r["at"] and r["by"] for r in rows) and [r["seq"] for r in rows] == list(range(1, len(rows) + 1))


def test_a_crash_before_the_manifest_leaves_no_version(registry, tmp_path, monkeypatch):
    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(registry_store, "_write_manifest", crash)
    with pytest.raises(OSError, match="disk full"):
        register(registry, make_model_dir(tmp_path))
    versions_dir = tmp_path / "artifacts" / "registry" / "flights" / "versions"
    assert registry.versions("flights") == [] and os.listdir(versions_dir) == []  # temp dir removed
    assert registry.aliases("flights") == {}
    with pytest.raises(RegistryNotFound, match="neither a production nor a staging alias"):
        registry.resolve("flights")
    monkeypatch.undo()
    assert register(registry, tmp_path / "trainer-m").version == 1


def test_leftovers_of_a_killed_registration_are_invisible(registry, tmp_path):
    versions_dir = tmp_path / "artifacts" / "registry" / "flights" / "versions"
    (versions_dir / ".tmp-0123456789ab" / "serving_model").mkdir(parents=True)  # kill -9 while copying
    (versions_dir / "1" / "serving_model").mkdir(parents=True)  # object-store crash before the manifest
    (versions_dir / "1" / "serving_model" / "saved_model.pb").write_bytes(b"half")
    assert registry.versions("flights") == []
    with pytest.raises(RegistryNotFound, match="has no version 1"):
        registry.get("flights", 1)
    v = register(registry, make_model_dir(tmp_path))
    assert v.version == 2  # number 1 holds stray files: it is burnt, never mixed with a new version
    assert [x.version for x in registry.versions("flights")] == [2]


def test_lock_timeout_is_a_clear_error(tmp_path):
    lock = str(tmp_path / "aliases.lock")
    with locking.exclusive(lock):
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "from mlops.registry import locking, LockTimeout\n"
                    "try:\n"
                    f"    with locking.exclusive({lock!r}, timeout_s=0.2): print('acquired')\n"
                    "except LockTimeout as e: print('timeout', e)\n"
                ),
            ],
            capture_output=True,
            text=True,
        )
    assert child.stdout.startswith("timeout") and "still locked by another process" in child.stdout, child.stderr
    with locking.exclusive(lock, timeout_s=0.2):  # released when the block ended
        pass
    assert issubclass(LockTimeout, RegistryError)


# ---- concurrent writers: separate processes, released together by a barrier ---------------------


def _register_and_promote(root: str, model_dir: str, barrier, results) -> None:
    registry = ModelRegistry(root)
    barrier.wait()
    v = register(registry, model_dir, actor=f"worker-{os.getpid()}")
    move = registry.promote("flights", v.version, reason=f"worker {os.getpid()}")
    results.put((v.version, move.seq, move.from_version, move.to_version))


def _promote_many(root: str, versions: list[int], barrier, results) -> None:
    registry = ModelRegistry(root)
    barrier.wait()
    for version in versions:
        move = registry.promote("flights", version, alias="canary")
        results.put(move.seq)


def _run_workers(target, args_per_worker) -> list:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(len(args_per_worker)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_per_worker]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs] if target is _register_and_promote else None
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0, f"worker failed with exit code {p.exitcode}"
    if out is None:
        out = []
        while not results.empty():
            out.append(results.get())
    return out


def _assert_consistent_chain(history, alias):
    """No lost update: each move starts where the previous move of the alias ended."""
    moves = [m for m in history if m.alias == alias]
    for prev, cur in zip(moves, moves[1:]):
        assert cur.from_version == prev.to_version, (prev, cur)
    return moves


def test_concurrent_registrations_and_promotions_lose_nothing(registry, tmp_path):
    n = 8
    dirs = [str(make_model_dir(tmp_path, str(i))) for i in range(n)]
    results = _run_workers(_register_and_promote, [(registry.root.rsplit("/registry", 1)[0], d) for d in dirs])
    assert sorted(r[0] for r in results) == list(range(1, n + 1))  # distinct versions, no gaps
    assert [v.version for v in registry.versions("flights")] == list(range(1, n + 1))
    assert {v.manifest["source_uri"] for v in registry.versions("flights")} == set(dirs)  # no mixed files
    history = registry.history("flights")
    assert [m.seq for m in history] == list(range(1, 2 * n + 1))
    staging = _assert_consistent_chain(history, "staging")
    production = _assert_consistent_chain(history, "production")
    assert len(staging) == n and len(production) == n
    assert sorted(m.to_version for m in production) == list(range(1, n + 1))
    assert {r[1] for r in results} == {m.seq for m in production}
    assert registry.aliases("flights") == {"staging": staging[-1].to_version, "production": production[-1].to_version}
    for expected in reversed([m.to_version for m in production][:-1]):  # the history serves rollback
        assert registry.rollback("flights").to_version == expected
    with pytest.raises(NoRollbackTarget):
        registry.rollback("flights")


def test_many_concurrent_promotions_are_all_recorded(registry, tmp_path):
    for i in range(4):
        register(registry, make_model_dir(tmp_path, str(i)))
    root = registry.root.rsplit("/registry", 1)[0]
    plans = [[(w + k) % 4 + 1 for k in range(10)] for w in range(8)]  # 80 requests, some no-ops
    seqs = _run_workers(_promote_many, [(root, plan) for plan in plans])
    assert len(seqs) == 80
    recorded = sorted(s for s in seqs if s is not None)
    canary = _assert_consistent_chain(registry.history("flights"), "canary")
    assert recorded == [m.seq for m in canary] and len(set(recorded)) == len(recorded)
    assert registry.aliases("flights")["canary"] == canary[-1].to_version


# ---- object store ------------------------------------------------------------------------------


def test_registry_on_an_object_store(tmp_path):
    root = f"memory://registry-test-{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(root)
    v1 = register(registry, make_model_dir(tmp_path, "1"))
    v2 = register(registry, make_model_dir(tmp_path, "2"))
    assert (v1.version, v2.version) == (1, 2) and v2.uri == f"{root}/registry/flights/versions/2"
    registry.promote("flights", 1)
    registry.promote("flights", 2)
    assert registry.rollback("flights").to_version == 1
    resolved = registry.resolve("flights")
    assert resolved.version == 1 and resolved.manifest == v1.manifest
    assert storage.read_bytes(f"{resolved.serving_model_uri}/saved_model.pb") == b"pb-1"
    assert not storage.exists(f"{root}/registry/flights/aliases.lock")  # the lock object is released
    assert registry.aliases("flights") == {"production": 1, "staging": 2}


# ---- CLI operations and environment hygiene --------------------------------------------------


def test_cli_ops_rows(tmp_path):
    root = str(tmp_path / "artifacts")
    registry = ModelRegistry(root)
    register(registry, make_model_dir(tmp_path, "1"))
    register(registry, make_model_dir(tmp_path, "2"))
    assert cli_ops.list_models(root) == [{"name": "flights", "versions": 2, "latest": 2, "aliases": {"staging": 2}}]
    moved = cli_ops.promote(root, "flights@staging", reason="weekly release", actor="bob")
    assert (moved["model"], moved["alias"], moved["from"], moved["to"], moved["changed"]) == (
        "flights",
        "production",
        None,
        2,
        True,
    )
    assert cli_ops.promote(root, "flights@2")["changed"] is False
    with pytest.raises(RegistryError, match="say which version"):
        cli_ops.promote(root, "flights")
    rows = cli_ops.list_versions(root, "flights")
    assert [(r["version"], r["aliases"], r["blessed"]) for r in rows] == [
        (1, [], True),
        (2, ["production", "staging"], True),
    ]
    shown = cli_ops.show(root, "flights")
    assert shown["selector"] == "flights@2" and shown["aliases"] == ["production", "staging"]
    assert shown["manifest"]["version"] == 2 and shown["serving_model_uri"].endswith("/2/serving_model")
    cli_ops.promote(root, "flights@1")
    back = cli_ops.rollback(root, "flights", reason="bad canary")
    assert (back["from"], back["to"], back["action"], back["reason"]) == (1, 2, "rollback", "bad canary")
    json.dumps([cli_ops.list_models(root), rows, shown, back])  # plain JSON-able values


def test_registry_modules_do_not_import_ml_metadata():
    code = (
        "import sys, mlops.registry, mlops.registry.store, mlops.registry.cli_ops, mlops.registry.lineage\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('ml_metadata', 'pandas', 'tensorflow')))\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
