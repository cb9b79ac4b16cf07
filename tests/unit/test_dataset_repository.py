"""Dataset repository: content addressing, immutability, atomicity, spans."""

import os

import pandas as pd
import pytest

from mlops import storage
from mlops.datasets.repository import DatasetError, DatasetRepository


def frame(n=10, offset=0, month=1):
    return pd.DataFrame(
        {
            "x": range(offset, offset + n),
            "cat": ["a", "b"] * (n // 2),
            "ts": pd.date_range(f"2013-{month:02d}-01", periods=n, freq="h", tz="UTC"),
        }
    )


def test_same_data_same_id_and_no_copy(tmp_path):
    repo = DatasetRepository(str(tmp_path))
    v1, created1 = repo.write("d", frame(), source="s", event_timestamp="ts")
    v2, created2 = repo.write("d", frame(), source="elsewhere", event_timestamp="ts")
    assert created1 and not created2
    assert v1.id == v2.id and v1.id.startswith("d-")
    assert len(repo.versions("d")) == 1


def test_different_data_different_id(tmp_path):
    repo = DatasetRepository(str(tmp_path))
    v1, _ = repo.write("d", frame(), source="s")
    v2, _ = repo.write("d", frame(offset=1), source="s")
    assert v1.id != v2.id
    changed = frame()
    changed["x"] = changed["x"].astype("float64")  # same values, other type: other version
    v3, _ = repo.write("d", changed, source="s")
    assert v3.id not in {v1.id, v2.id}


def test_manifest_fields_and_round_trip(tmp_path):
    repo = DatasetRepository(str(tmp_path))
    v, _ = repo.write("d", frame(), source="src.csv", span="2013-01", event_timestamp="ts")
    m = repo.get(v.id).manifest
    assert m["row_count"] == 10 and m["span"] == "2013-01" and m["source"] == "src.csv"
    assert [c["name"] for c in m["columns"]] == ["x", "cat", "ts"]
    assert m["time_range"][0].startswith("2013-01-01T00:00:00")
    pd.testing.assert_frame_equal(repo.load(v), frame())


def test_crash_before_commit_leaves_no_version(tmp_path, monkeypatch):
    repo = DatasetRepository(str(tmp_path))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "write_json_atomic", boom)  # dies after the data, before the manifest
    with pytest.raises(KeyboardInterrupt):
        repo.write("d", frame(), source="s")
    monkeypatch.undo()
    assert repo.versions("d") == []
    leftovers = os.listdir(tmp_path / "datasets" / "d" / "versions")
    assert leftovers == []  # the temp dir was cleaned up
    v, created = repo.write("d", frame(), source="s")
    assert created and repo.versions("d")[0].id == v.id


def test_half_written_version_is_invisible(tmp_path):
    repo = DatasetRepository(str(tmp_path))
    v, _ = repo.write("d", frame(), source="s")
    os.remove(os.path.join(storage.local_path(v.uri), "manifest.json"))
    assert repo.versions("d") == [] and repo.find(v.id) is None


def test_spans_latest_and_ranges(tmp_path):
    repo = DatasetRepository(str(tmp_path))
    ids = {}
    for m in (1, 2, 3):
        ids[m] = repo.write("d", frame(month=m), source="s", span=f"2013-{m:02d}", event_timestamp="ts")[0].id
    assert list(repo.spans("d")) == ["2013-01", "2013-02", "2013-03"]
    assert [v.id for v in repo.resolve("d", "2013-02:2013-03")] == [ids[2], ids[3]]
    assert [v.id for v in repo.resolve("d", "latest-span")] == [ids[3]]
    assert len(repo.resolve("d", "latest")) == 3  # no full version: all spans
    corrected = repo.write("d", frame(month=2, offset=5), source="s", span="2013-02")[0]
    assert repo.spans("d")["2013-02"].id == corrected.id  # re-ingested span supersedes
    with pytest.raises(DatasetError, match="span 2013-07 not ingested"):
        repo.resolve("d", "2013-07")
    with pytest.raises(DatasetError, match="start is after end"):
        repo.resolve("d", "2013-03:2013-01")


def test_empty_frame_and_bad_span_rejected(tmp_path):
    repo = DatasetRepository(str(tmp_path))
    with pytest.raises(DatasetError, match="no rows"):
        repo.write("d", frame().iloc[:0], source="s")
    with pytest.raises(DatasetError, match="not YYYY-MM"):
        repo.write("d", frame(), source="s", span="2013-13")


def test_object_store_uri(tmp_path):
    """The same code path on an fsspec object store (memory://): manifest written last."""
    repo = DatasetRepository("memory://bucket/artifacts")
    v, created = repo.write("d", frame(), source="s")
    assert created and v.uri.startswith("memory://")
    assert repo.write("d", frame(), source="s") == (repo.get(v.id), False)
    pd.testing.assert_frame_equal(repo.load(v), frame())
    storage.remove("memory://bucket", recursive=True)


def _age(path, seconds):
    old = os.path.getmtime(path) - seconds
    os.utime(path, (old, old))


def test_every_write_sweeps_stale_temp_dirs_but_not_a_live_writers(tmp_path):
    """A killed ingest leaves .tmp-* behind; the next write sweeps it even when its own version
    already exists. A temp dir younger than an hour belongs to a live writer and stays."""
    repo = DatasetRepository(str(tmp_path))
    repo.write("d", frame(), source="s")
    versions = tmp_path / "datasets" / "d" / "versions"
    killed, live = versions / ".tmp-killed000000", versions / ".tmp-live00000000"
    for leftover in (killed, live):
        leftover.mkdir()
        (leftover / "data.parquet").write_bytes(b"half written")
    _age(killed, 2 * 3600)
    _, created = repo.write("d", frame(), source="s")  # the "already exists" path
    assert not created
    assert not killed.exists() and live.exists()
    _age(live, 2 * 3600)
    with pytest.raises(DatasetError, match="no rows"):
        repo.write("d", frame().iloc[:0], source="s")  # refused input changes nothing
    assert live.exists()


def _racing_write(root, barrier, results):
    """One of two processes writing the same version; both have passed the existence check and
    built their temp dir when they reach the rename (the barrier)."""
    import mlops.storage as storage_module

    real_rename = storage_module.rename

    def rename_after_both_built(src, dst):
        barrier.wait(timeout=60)
        return real_rename(src, dst)

    storage_module.rename = rename_after_both_built
    version, created = DatasetRepository(root).write("d", frame(), source="s")
    results.put((version.id, created))


def test_concurrent_writes_of_the_same_data_create_it_once(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    writers = [ctx.Process(target=_racing_write, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for w in writers:
        w.start()
    outcomes = sorted(results.get(timeout=120) for _ in writers)
    for w in writers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert outcomes[0][0] == outcomes[1][0]
    assert sorted(created for _, created in outcomes) == [False, True]  # one found the other's version
    repo = DatasetRepository(str(tmp_path))
    assert len(repo.versions("d")) == 1
    assert os.listdir(tmp_path / "datasets" / "d" / "versions") == [outcomes[0][0]]  # no temp dir left


def test_errors_have_kinds(tmp_path):
    from mlops.errors import InvalidInput, NotFound, status_of

    repo = DatasetRepository(str(tmp_path))
    with pytest.raises(NotFound, match=f"not found under {tmp_path}") as missing:
        repo.get("d-000000000000")
    with pytest.raises(NotFound, match=f"has no versions under {tmp_path}"):
        repo.resolve("d", "latest")
    with pytest.raises(InvalidInput) as bad_span:
        repo.write("d", frame(), source="s", span="2013-13")
    assert isinstance(missing.value, DatasetError) and isinstance(bad_span.value, DatasetError)
    assert (status_of(missing.value).exit_code, status_of(bad_span.value).exit_code) == (1, 2)
