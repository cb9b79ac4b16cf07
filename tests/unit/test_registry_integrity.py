"""A damaged registry is reported, never half-updated: every command on a corrupt aliases.json
fails with one line naming the file and changes no byte; `repair` rebuilds it from the history;
a writer killed between its two writes leaves the previous state. And a model trained from the
same inputs as a registered version is recognised (training fingerprint), not registered twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlops import storage
from mlops.errors import InvalidInput, MlopsError, NotFound, Refused, Unavailable, status_of
from mlops.registry import (
    CorruptRegistryFile,
    InvalidRegistryInput,
    LockTimeout,
    ModelRegistry,
    NoRollbackTarget,
    NotBlessedError,
    RegistryError,
    RegistryNotFound,
    cli_ops,
)
from tests.support.registry_fakes import make_model_dir, register

REPO = Path(__file__).resolve().parents[2]


def snapshot(model_root: Path) -> dict[str, bytes]:
    """Every file of one model in the registry (version files, aliases, history, lock), by path."""
    return {str(p.relative_to(model_root)): p.read_bytes() for p in sorted(model_root.rglob("*")) if p.is_file()}


@pytest.fixture
def released(tmp_path):
    """flights@1..3; production 1 then 2 (so a rollback has a target), staging 3."""
    root = tmp_path / "artifacts"
    registry = ModelRegistry(str(root))
    for tag in "123":
        register(registry, make_model_dir(tmp_path, tag))
    registry.promote("flights", 1)
    registry.promote("flights", 2)
    return root, registry, root / "registry" / "flights"


CORRUPTIONS = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "list": lambda good: b"[2, 3]\n",
    "missing version": lambda good: json.dumps(
        {**json.loads(good), "aliases": {"production": 9, "staging": 3}}
    ).encode(),
}
EXPECTED_PROBLEM = {
    "truncated": "is not valid JSON",
    "empty": "is empty",
    "list": "holds a JSON list",
    "missing version": r"says production -> 9, staging -> 3 but its history",
}


def _commands(root: Path, tmp_path: Path):
    registry = ModelRegistry(str(root))
    return {
        "list": lambda: cli_ops.list_models(str(root)),
        "list versions": lambda: cli_ops.list_versions(str(root), "flights"),
        "show": lambda: cli_ops.show(str(root), "flights@production"),
        "promote": lambda: cli_ops.promote(str(root), "flights@1"),
        "rollback": lambda: cli_ops.rollback(str(root), "flights"),
        "register": lambda: register(registry, make_model_dir(tmp_path, "4")),
    }


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_command_on_a_corrupt_aliases_file_fails_cleanly_and_changes_nothing(released, tmp_path, kind):
    root, _, model_root = released
    aliases = model_root / "aliases.json"
    aliases.write_bytes(CORRUPTIONS[kind](aliases.read_bytes()))
    before = snapshot(model_root)
    for command, run in _commands(root, tmp_path).items():
        with pytest.raises(CorruptRegistryFile) as caught:
            run()
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{aliases}: "), (command, message)
        assert re.search(EXPECTED_PROBLEM[kind], message), (command, message)
        assert "run `mlops models repair flights`" in message, (command, message)
        assert not isinstance(caught.value, (ValueError, LookupError, KeyError, AttributeError)), command
        assert snapshot(model_root) == before, f"{command} changed files on a corrupt registry"
    assert sorted(p.name for p in (model_root / "versions").iterdir()) == ["1", "2", "3"]  # register copied nothing


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_repair_rebuilds_aliases_from_the_history_and_is_idempotent(released, tmp_path, kind):
    root, registry, model_root = released
    aliases = model_root / "aliases.json"
    good = aliases.read_bytes()
    aliases.write_bytes(CORRUPTIONS[kind](good))
    report = cli_ops.repair(str(root), "flights")
    assert report["changed"] and EXPECTED_PROBLEM[kind].split(" ")[1] in report["problem"]
    assert report["aliases"] == {"production": 2, "staging": 3} and report["history_seq"] == 5
    was = {"production": 9, "staging": 3} if kind == "missing version" else {}
    assert report["changes"] == [
        {"alias": a, "was": was.get(a), "now": v}
        for a, v in sorted({"production": 2, "staging": 3}.items())
        if was.get(a) != v
    ]
    assert aliases.read_bytes() == good
    before = snapshot(model_root)
    again = cli_ops.repair(str(root), "flights")
    assert (again["changed"], again["problem"], again["changes"]) == (False, None, [])
    assert snapshot(model_root) == before
    assert cli_ops.rollback(str(root), "flights")["to"] == 1  # everything works again, history intact
    assert registry.resolve("flights").version == 1


def test_a_lost_aliases_file_is_reported_and_rebuilt_from_the_whole_history(released):
    root, registry, model_root = released
    (model_root / "aliases.json").unlink()
    with pytest.raises(CorruptRegistryFile, match=r"aliases.json: is missing but history.jsonl records 5 moves; run "):
        registry.resolve("flights")
    report = cli_ops.repair(str(root), "flights")
    assert (report["history_seq"], report["aliases"]) == (5, {"production": 2, "staging": 3})
    assert registry.resolve("flights").version == 2


def test_a_history_that_leads_to_a_deleted_version_blocks_until_the_alias_moves(released, tmp_path):
    root, registry, model_root = released
    shutil.rmtree(model_root / "versions" / "2")  # production's target, deleted by hand
    with pytest.raises(
        CorruptRegistryFile,
        match=r"aliases.json: alias 'production' points at version 2, which does "
        r"not exist \(versions: 1, 3\); restore",
    ):
        registry.resolve("flights")
    with pytest.raises(CorruptRegistryFile, match="points at version 2"):
        cli_ops.repair(str(root), "flights")  # the history itself says 2: a rebuild cannot help
    with pytest.raises(CorruptRegistryFile, match="points at version 2"):
        registry.promote("flights", 3, alias="canary")  # would leave production broken
    assert registry.promote("flights", 1).to_version == 1  # moving the broken alias fixes it
    assert registry.aliases("flights") == {"production": 1, "staging": 3}


def test_a_damaged_history_is_named_with_its_line(released):
    root, registry, model_root = released
    history = model_root / "history.jsonl"
    lines = history.read_text().splitlines()
    history.write_text("\n".join(lines[:2] + ["{not json"] + lines[3:]) + "\n")
    with pytest.raises(
        CorruptRegistryFile,
        match=r"history.jsonl: line 3 is not a move record .*restore it from a "
        r"backup",
    ):
        cli_ops.list_models(str(root))
    with pytest.raises(CorruptRegistryFile, match="line 3"):
        cli_ops.repair(str(root), "flights")


def test_models_cli_prints_one_line_for_a_corrupt_file_and_repairs_it(released, monkeypatch):
    from click.testing import CliRunner

    from cli.main import cli

    root, _, model_root = released
    aliases = model_root / "aliases.json"
    aliases.write_bytes(aliases.read_bytes()[:10])
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", str(root))
    runner = CliRunner()
    for args in (["list"], ["list", "flights"], ["show", "flights"], ["promote", "flights@1"], ["rollback", "flights"]):
        out = runner.invoke(cli, ["models", *args])
        errors = out.stderr.splitlines()[1:]  # after the artifact-root line every command states
        assert out.exit_code == 1 and len(errors) == 1 and not out.stdout, (args, out.output)
        assert errors[0].startswith(f"Error: {aliases}: is not valid JSON") and "Traceback" not in out.output, errors
    repaired = runner.invoke(cli, ["models", "repair", "flights"])
    assert repaired.exit_code == 0, repaired.output
    report = json.loads(repaired.stdout)
    assert report["changed"] and report["changes"] == [
        {"alias": "production", "was": None, "now": 2},
        {"alias": "staging", "was": None, "now": 3},
    ]
    again = runner.invoke(cli, ["models", "repair", "flights"])
    assert json.loads(again.stdout)["changed"] is False
    assert json.loads(runner.invoke(cli, ["models", "show", "flights"]).stdout)["selector"] == "flights@2"
    diff = runner.invoke(cli, ["models", "diff", "flights@1", "flights@2"])
    assert json.loads(diff.stdout)["same_bytes"] is False, diff.output


# ---- a writer that fails or dies between its two writes --------------------------------------


def _fail_on_aliases_write(monkeypatch, error: BaseException):
    real = storage.write_bytes_atomic

    def write(uri: str, data: bytes) -> None:
        if uri.endswith("/aliases.json") and storage.exists(uri.replace("aliases.json", "history.jsonl")):
            raise error
        real(uri, data)

    monkeypatch.setattr(storage, "write_bytes_atomic", write)


def test_an_error_between_history_and_aliases_writes_changes_nothing(released, monkeypatch):
    root, registry, model_root = released
    before = snapshot(model_root)
    _fail_on_aliases_write(monkeypatch, OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        registry.promote("flights", 3)
    with pytest.raises(OSError, match="disk full"):
        registry.rollback("flights")
    assert snapshot(model_root) == before  # the history line was taken back
    monkeypatch.undo()
    assert registry.aliases("flights") == {"production": 2, "staging": 3}
    move = registry.promote("flights", 3)
    assert (move.seq, move.from_version) == (6, 2) and len(registry.history("flights")) == 6


def test_a_registration_failing_at_its_alias_move_leaves_no_version(released, tmp_path, monkeypatch):
    _, registry, model_root = released
    _fail_on_aliases_write(monkeypatch, OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        register(registry, make_model_dir(tmp_path, "4"))
    monkeypatch.undo()
    assert [v.version for v in registry.versions("flights")] == [1, 2, 3]
    assert registry.aliases("flights") == {"production": 2, "staging": 3} and len(registry.history("flights")) == 5
    assert register(registry, tmp_path / "trainer-4").version == 5  # number 4 stays burnt, never reused


KILLED_WRITER = """
import os, signal, sys
from mlops import storage
from mlops.registry import ModelRegistry
real = storage.write_bytes_atomic
def write(uri, data):
    if uri.endswith("/aliases.json"):
        os.kill(os.getpid(), signal.SIGKILL)  # history.jsonl is written, aliases.json not yet
    real(uri, data)
storage.write_bytes_atomic = write
ModelRegistry(sys.argv[1]).promote("flights", 3, reason="killed")
"""


def test_kill_9_between_history_and_aliases_writes_leaves_the_previous_state(released):
    root, registry, model_root = released
    aliases_before = (model_root / "aliases.json").read_bytes()
    out = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(root)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert "killed" in (model_root / "history.jsonl").read_text()  # the write-ahead line is there...
    assert (model_root / "aliases.json").read_bytes() == aliases_before  # ...but not committed
    assert registry.aliases("flights") == {"production": 2, "staging": 3}
    assert [m.reason for m in registry.history("flights")][-1] != "killed"
    assert cli_ops.repair(str(root), "flights")["changed"] is False  # consistent as it stands
    move = registry.promote("flights", 1, reason="after the crash")
    assert (move.seq, move.from_version, move.to_version) == (6, 2, 1)
    assert "killed" not in (model_root / "history.jsonl").read_text()  # the next writer dropped it
    assert registry.rollback("flights").to_version == 2  # the killed move never took effect


def test_first_move_killed_before_its_commit_leaves_an_empty_model(tmp_path):
    root = tmp_path / "artifacts"
    code = KILLED_WRITER.replace(
        'ModelRegistry(sys.argv[1]).promote("flights", 3, reason="killed")',
        "from tests.support.registry_fakes import make_model_dir, register\n"
        "from pathlib import Path\n"
        "register(ModelRegistry(sys.argv[1]), make_model_dir(Path(sys.argv[2])))",
    )
    code = code.replace(
        'if uri.endswith("/aliases.json"):',  # the commit, not the first move's empty file
        'if uri.endswith("/aliases.json") and b\'"staging"\' in data:',
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    registry = ModelRegistry(str(root))
    assert registry.aliases("flights") == {} and registry.history("flights") == []
    assert [v.version for v in registry.versions("flights")] == [1]  # complete, not yet staged
    assert register(registry, tmp_path / "trainer-m").version == 2 and registry.aliases("flights") == {"staging": 2}


def test_aliases_files_of_earlier_releases_are_read_and_upgraded(released):
    root, registry, model_root = released
    (model_root / "aliases.json").write_text(json.dumps({"production": 2, "staging": 3}))  # the flat format
    assert registry.aliases("flights") == {"production": 2, "staging": 3}
    registry.promote("flights", 3)
    assert json.loads((model_root / "aliases.json").read_text()) == {
        "aliases": {"production": 3, "staging": 3},
        "history_seq": 6,
    }


def test_registry_errors_have_kinds_not_builtin_bases():
    assert all(
        issubclass(e, MlopsError) and not issubclass(e, (ValueError, LookupError, TimeoutError))
        for e in (
            RegistryError,
            InvalidRegistryInput,
            RegistryNotFound,
            NotBlessedError,
            NoRollbackTarget,
            LockTimeout,
            CorruptRegistryFile,
        )
    )
    assert issubclass(RegistryNotFound, NotFound) and issubclass(InvalidRegistryInput, InvalidInput)
    assert issubclass(NotBlessedError, Refused) and issubclass(NoRollbackTarget, Refused)
    assert issubclass(LockTimeout, Unavailable)
    assert [
        status_of(e("x")).exit_code for e in (InvalidRegistryInput, RegistryNotFound, NotBlessedError, LockTimeout)
    ] == [2, 1, 1, 75]
    corrupt = CorruptRegistryFile("/r/aliases.json", "is empty", "run `mlops models repair flights`")
    assert (status_of(corrupt).exit_code, status_of(corrupt).http) == (1, 500)
    assert str(corrupt) == "/r/aliases.json: is empty; run `mlops models repair flights`"


# ---- duplicate registrations: the training fingerprint ----------------------------------------


def _trained(tmp_path: Path, tag: str, fingerprint: str | None) -> Path:
    """A Trainer output as run_cached leaves it: model files plus the step's `_fingerprint`."""
    d = make_model_dir(tmp_path, tag)
    if fingerprint:
        (d / "_fingerprint").write_text(f"{fingerprint}:model\n")
    return d


def _push(config, model_dir: Path, tmp_path: Path, dataset: str = "flights-abc123def456"):
    from components.pusher.executor import push
    from mlops import artifacts

    evaluation = tmp_path / f"evaluation-{model_dir.name}"
    evaluation.mkdir(exist_ok=True)
    (evaluation / artifacts.METRICS_FILE).write_text(json.dumps({"overall": {"candidate": {"auc": 0.71}}}))
    return push(
        config,
        model_dir=str(model_dir),
        evaluation_dir=str(evaluation),
        blessing={"blessed": True, "reason": "auc 0.71 >= 0.65"},
        dataset_versions=[dataset],
        git_commit="deadbeef",
    )


def test_pusher_recognises_a_model_trained_from_the_same_inputs(tmp_path):
    from mlops.steps import load_step_config

    config = load_step_config("configs/flights.yaml", "", str(tmp_path / "artifacts"))
    first = _push(config, _trained(tmp_path, "run1", "key-a"), tmp_path)
    assert first.pushed and first.version == 1
    rerun = _push(config, _trained(tmp_path, "run2", "key-a"), tmp_path)  # --no-cache: new bytes, same inputs
    assert (rerun.pushed, rerun.version) == (False, 1)
    assert (
        rerun.reason == f"already registered as {config.project}@1 (same training inputs: dataset versions, "
        "config and code)"
    )
    other = _push(config, _trained(tmp_path, "run3", "key-b"), tmp_path, dataset="flights-0123456789ab")
    assert other.pushed and other.version == 2
    registry = ModelRegistry(config.artifact_root)
    assert [v.manifest["training_fingerprint"] for v in registry.versions(config.project)] == [
        "key-a:model",
        "key-b:model",
    ]


def test_show_and_diff_say_why_two_versions_differ(tmp_path):
    root = tmp_path / "artifacts"
    registry = ModelRegistry(str(root))
    register(registry, _trained(tmp_path, "1", None), training_fingerprint="key-a:model")
    register(registry, _trained(tmp_path, "2", None), training_fingerprint="key-a:model")  # e.g. a forced re-run
    register(
        registry,
        _trained(tmp_path, "3", None),
        training_fingerprint="key-b:model",
        dataset_versions=["flights-0123456789ab"],
    )
    register(registry, _trained(tmp_path, "4", None))  # registered before fingerprints existed
    same = cli_ops.diff(str(root), "flights@1", "flights@2")
    assert (same["same_training_inputs"], same["same_bytes"]) == (True, False)
    assert same["differing_files"] == ["model.tflite", "serving_model/saved_model.pb"]
    assert same["verdict"] == (
        "flights@1 and flights@2: same training inputs, different bytes (model.tflite, "
        "serving_model/saved_model.pb): training is not byte-reproducible"
    )
    other = cli_ops.diff(str(root), "flights@1", "flights@3")
    assert other["verdict"] == "flights@1 and flights@3: different training inputs (dataset_versions)"
    unknown = cli_ops.diff(str(root), "flights@2", "flights@4")
    assert unknown["same_training_inputs"] is None and "training inputs unknown" in unknown["verdict"]
    assert cli_ops.diff(str(root), "flights@3", "flights@3")["verdict"].endswith("identical model files")
    assert cli_ops.show(str(root), "flights@2")["same_training_inputs"] == [
        "flights@1 and flights@2: same training inputs, different bytes (model.tflite, serving_model/saved_model.pb)"
        ": training is not byte-reproducible"
    ]
    assert cli_ops.show(str(root), "flights@3")["same_training_inputs"] == []
    assert os.path.isdir(root / "registry" / "flights" / "versions" / "4")


def test_the_training_report_is_not_part_of_the_model_identity(tmp_path):
    """training.json holds timings that differ on every run; the model files do not (see below)."""
    from mlops.registry.store import model_content_hash
    from mlops.steps import load_step_config

    first, rerun = _trained(tmp_path, "same", None), tmp_path / "rerun"
    shutil.copytree(first, rerun)
    (rerun / "training.json").write_text(json.dumps({"epochs": 1, "durations_s": {"fit": 8.1}}))
    assert model_content_hash(str(first)) == model_content_hash(str(rerun))
    (rerun / "model.tflite").write_bytes(b"other weights")
    assert model_content_hash(str(first)) != model_content_hash(str(rerun))

    config = load_step_config("configs/flights.yaml", "", str(tmp_path / "artifacts"))
    shutil.copy(first / "model.tflite", rerun / "model.tflite")
    assert _push(config, first, tmp_path).version == 1
    again = _push(config, rerun, tmp_path)
    assert (again.pushed, again.version, again.reason) == (
        False,
        1,
        f"already registered as {config.project}@1 (identical model files)",
    )


@pytest.mark.integration
def test_the_trainer_output_is_byte_reproducible(tmp_path):
    """Two trainings on the same inputs, each in its own worker process (what `--no-cache` re-runs):
    seeded and with deterministic ops, the SavedModel, TFLite and preprocessing files are equal byte
    for byte, so the model content hash is; only the report's timings differ."""
    from components.trainer.executor import run_training
    from components.transform.executor import run_transform
    from mlops.config import load_config
    from mlops.registry.store import model_content_hash
    from tests.support.fixtures import FLIGHTS_CONFIG
    from tests.support.reference_data import write_examples

    config = load_config(
        FLIGHTS_CONFIG,
        overrides={"artifact_root": str(tmp_path / "artifacts"), "model.epochs": 1, "model.batch_size": 256},
    )
    examples, transform_dir = str(tmp_path / "examples"), str(tmp_path / "transform")
    write_examples(config, examples, n_rows=2000, seed=11)
    run_transform(config, examples, transform_dir)
    runs = [run_training(config, transform_dir, str(tmp_path / f"model-{i}")).out_dir for i in range(2)]
    assert model_content_hash(runs[0]) == model_content_hash(runs[1])
    for rel in (
        "serving_model/saved_model.pb",
        "serving_model/variables/variables.data-00000-of-00001",
        "model.tflite",
        "tflite_preprocessing.json",
    ):
        assert Path(runs[0], rel).read_bytes() == Path(runs[1], rel).read_bytes(), rel


def test_a_reader_racing_a_models_first_move_sees_the_move_not_damage(tmp_path):
    """A reader takes aliases.json (missing: no move yet), then the history; if the model's first
    move lands between the two reads (aliases.json, then history.jsonl, then aliases.json again),
    the reader must see that move, not 'aliases.json is missing but history.jsonl records 1 moves'
    (seen with concurrent registrations of a new model)."""
    from mlops.registry.aliases import AliasBook

    model_uri = str(tmp_path / "flights")
    os.makedirs(model_uri)
    reader = AliasBook(model_uri, version_exists=lambda n: True)
    writer = AliasBook(model_uri, version_exists=lambda n: True)
    read_aliases = reader._read_committed_seq
    raced = []

    def aliases_then_a_concurrent_first_move():
        committed = read_aliases()
        if not raced:
            raced.append(committed)
            writer.move("staging", 1, action="register")
        return committed

    reader._read_committed_seq = aliases_then_a_concurrent_first_move
    state = reader.load()
    assert raced == [None]  # the first read saw no aliases.json
    assert state.aliases == {"staging": 1} and len(state.history) == 1
