"""Embedded inference: TFLite vs SavedModel parity on the real model's test split, the edge CLI's
input handling, and an edge bundle that runs from its own folder with TensorFlow (and pandas,
pydantic, fsspec, pyarrow) made unimportable.

A TFLite interpreter without TensorFlow (ai_edge_litert, tflite_runtime) is in neither locked
environment. Set MLOPS_EDGE_PYTHON to an interpreter that has one (e.g. a venv with
`pip install numpy ai-edge-litert`) and the bundle's full CLI run is checked under it; otherwise
that test is skipped saying so, and the NumPy path (everything but the interpreter) is still
checked with TensorFlow blocked.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from serving.edge import BUNDLE_INFO, EDGE_RUNTIMES, main, parse_csv_rows, parse_json_rows
from serving.predictor import InputSpec, PredictionInputError, validate_rows
from tests.support.fixtures import FLIGHTS_CONFIG

pytestmark = pytest.mark.serving_env

PARITY_TOLERANCE = 1e-5
SINGLE_ROWS = 25
# What an edge device does not have: importing any of these from the bundle fails the run.
BLOCKED = ("tensorflow", "tf_keras", "keras", "pandas", "pydantic", "fsspec", "pyarrow", "yaml")
EDGE_PYTHON = os.environ.get("MLOPS_EDGE_PYTHON")

_BLOCKER = textwrap.dedent(f"""
    import sys

    class _EdgeDeviceFinder:
        # Raises for packages an edge device lacks, before any other finder can supply them.
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {BLOCKED!r}:
                raise ImportError(f"{{name}} is not available on an edge device (blocked by edge_test)")
            return None

    sys.meta_path.insert(0, _EdgeDeviceFinder())
""")


def test_tflite_file_names_follow_the_artifact_contract():
    from mlops import artifacts
    from mlops.modeling import tflite_predictor
    from mlops.registry.store import MODEL_FILES

    assert tflite_predictor.MODEL_FILE == artifacts.TFLITE_MODEL == MODEL_FILES["tflite"]
    assert tflite_predictor.PREPROCESSING_FILE == artifacts.TFLITE_PREPROCESSING == MODEL_FILES["tflite_preprocessing"]


def test_one_row_rows_and_columns_parse_to_the_same_columns():
    one = parse_json_rows('{"hour": 7, "carrier": "DL", "temp": null}')
    assert one == {"hour": [7], "carrier": ["DL"], "temp": [None]}
    rows = parse_json_rows('[{"hour": 7, "carrier": "DL"}, {"carrier": "UA", "hour": 18.5}]')
    assert (
        rows
        == parse_json_rows('{"hour": [7, 18.5], "carrier": ["DL", "UA"]}')
        == {"hour": [7, 18.5], "carrier": ["DL", "UA"]}
    )
    assert parse_csv_rows("hour,carrier\n7,DL\n,UA\n") == {"hour": ["7", None], "carrier": ["DL", "UA"]}


def test_csv_cells_are_parsed_and_checked_by_the_servers_validator():
    inputs = [InputSpec("hour", "float32"), InputSpec("carrier", "string")]
    cols, n = validate_rows(inputs, parse_csv_rows("hour,carrier\n7,DL\n,\n"))
    assert n == 2 and cols["carrier"].tolist() == ["DL", ""]
    np.testing.assert_array_equal(cols["hour"], np.array([7.0, np.nan], np.float32))
    with pytest.raises(PredictionInputError, match=r"input 'hour': expected numbers, got 'seven' at row 1"):
        validate_rows(inputs, parse_csv_rows("hour,carrier\n7,DL\nseven,UA\n"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"--json: not valid JSON"),
        ("[]", r"no rows"),
        ("7", r"expected an object or a list of objects, got int"),
        ('[{"hour": 7}, 8]', r"row 1: expected an object"),
        (
            '[{"hour": 7, "carrier": "DL"}, {"hour": 8, "carier": "UA"}]',
            r"row 1: inputs differ from row 0 \(missing \['carrier'\], extra \['carier'\]\)",
        ),
        ('{"hour": [7, 8], "carrier": "DL"}', r"either one row .* or columns"),
    ],
)
def test_bad_json_is_refused_naming_the_row(text, message):
    with pytest.raises(PredictionInputError, match=message):
        parse_json_rows(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"empty input"),
        ("hour,hour\n1,2\n", r"duplicate column names"),
        ("hour,carrier\n7\n", r"--csv line 2: 1 cells, the header has 2"),
        ("hour,carrier\n", r"a header but no rows"),
    ],
)
def test_bad_csv_is_refused_naming_the_line(text, message):
    with pytest.raises(PredictionInputError, match=message):
        parse_csv_rows(text)


# ---- the real model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def test_split(real_model_dir):
    """(raw columns of the real model's test split, the SavedModel's predictions on them)."""
    from mlops.modeling.predictions import raw_features_of, read_raw_rows
    from serving.predictor import load_predictor

    rows = read_raw_rows(
        os.path.join(os.path.dirname(real_model_dir), "examples"), "test", raw_features_of(real_model_dir)
    )
    return rows, load_predictor(real_model_dir, "savedmodel").predict(rows)


@pytest.mark.integration
def test_tflite_matches_the_savedmodel_on_the_test_split_batched_and_row_by_row(real_model_dir, test_split):
    from serving.predictor import load_predictor

    rows, expected = test_split
    n = len(expected)
    assert n >= 200, "the test split is too small to mean anything"
    assert expected.std() > 1e-3, "the model predicts a constant: parity would prove nothing"
    tflite = load_predictor(real_model_dir, "tflite")
    batch = tflite.predict(rows)
    assert batch.shape == (n,) and batch.dtype == np.float32
    assert np.max(np.abs(batch - expected)) <= PARITY_TOLERANCE

    savedmodel = load_predictor(real_model_dir, "savedmodel")
    for i in np.linspace(0, n - 1, SINGLE_ROWS).astype(int):
        one = {k: v[i : i + 1] for k, v in rows.items()}
        single_tflite, single_savedmodel = tflite.predict(one), savedmodel.predict(one)
        assert abs(single_tflite[0] - single_savedmodel[0]) <= PARITY_TOLERANCE, f"row {i}"
        assert abs(single_tflite[0] - batch[i]) <= PARITY_TOLERANCE, f"row {i}: batch and single differ"


@pytest.fixture(scope="module")
def bundle(real_model_dir, tmp_path_factory):
    """An edge bundle of the real model, made from the registry (flights@production)."""
    from mlops.config import load_config
    from mlops.registry.store import ModelRegistry
    from serving.edge import build_bundle
    from tests.support.serving_models import register

    root = tmp_path_factory.mktemp("edge-registry") / "artifacts"
    register(root, "flights", real_model_dir)
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="edge test")
    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root)})
    out = tmp_path_factory.mktemp("edge") / "bundle"
    info = build_bundle(str(out), selector="flights@production", config=config)
    assert (info["model"], info["version"]) == ("flights", "1")
    return out


def _write_csv(path, rows: dict, idx) -> None:
    """The raw rows as a device would send them: NaN and "" become empty cells."""
    names = list(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for i in idx:
            w.writerow(
                [
                    "" if (isinstance(rows[k][i], (float, np.floating)) and np.isnan(rows[k][i])) else rows[k][i]
                    for k in names
                ]
            )


def _on_device(python: str, bundle_dir, args: list[str], tmp_path) -> subprocess.CompletedProcess:
    """Runs python ARGS in the bundle folder, with the bundle (not the repo) first on the path and
    the packages an edge device lacks made unimportable."""
    blocker = tmp_path / "edge-device"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(_BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = f"{blocker}{os.pathsep}{bundle_dir}"
    return subprocess.run([python, *args], cwd=str(bundle_dir), env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_the_bundle_is_self_contained_and_its_numpy_path_imports_no_tensorflow(bundle, test_split, tmp_path):
    files = json.loads((bundle / BUNDLE_INFO).read_text())["files"]
    assert {
        "model/model.tflite",
        "model/tflite_preprocessing.json",
        "serving/edge.py",
        "serving/predictor.py",
        "mlops/modeling/tflite_predictor.py",
        "mlops/modeling/farmhash.py",
        "README.md",
        "requirements.txt",
    } <= set(files)
    rows, _ = test_split
    _write_csv(tmp_path / "rows.csv", rows, range(20))
    # Everything an edge prediction does except the interpreter: parse, validate, preprocess.
    script = textwrap.dedent("""
        import json, sys
        import serving.edge, serving.predictor
        from mlops.modeling import tflite_predictor
        from serving.predictor import validate_rows, InputSpec
        spec = json.load(open("model/tflite_preprocessing.json"))
        pre = tflite_predictor.NumpyPreprocessor(spec)
        inputs = [InputSpec(n, d) for n, d in pre.raw_features]
        cols, n = validate_rows(inputs, serving.edge.parse_csv_rows(open(sys.argv[1]).read()))
        features = pre(cols)
        print(json.dumps({"rows": n, "features": sorted(features),
                          "modules": [serving.edge.__file__, serving.predictor.__file__, tflite_predictor.__file__],
                          "loaded": sorted({m.partition(".")[0] for m in sys.modules})}))
    """)
    proc = _on_device(sys.executable, bundle, ["-c", script, str(tmp_path / "rows.csv")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["rows"] == 20 and set(
        dict(json.load(open(bundle / "model/tflite_preprocessing.json"))["model_inputs"])
    ) <= set(out["features"])
    assert all(m.startswith(str(bundle)) for m in out["modules"]), out["modules"]
    assert not set(BLOCKED) & set(out["loaded"])


@pytest.mark.integration
def test_the_bundle_cli_predicts_without_tensorflow(bundle, test_split, tmp_path):
    rows, expected = test_split
    idx = range(0, len(expected), max(1, len(expected) // 40))
    _write_csv(tmp_path / "rows.csv", rows, idx)
    runtime = next((m for m in EDGE_RUNTIMES if importlib.util.find_spec(m)), None)
    python = EDGE_PYTHON or (sys.executable if runtime else None)
    args = ["-m", "serving.edge", "--model-dir", "model", "--csv", str(tmp_path / "rows.csv")]
    if python is None:
        # TensorFlow blocked and no other interpreter: the CLI must say what to install.
        proc = _on_device(sys.executable, bundle, args, tmp_path)
        assert proc.returncode == 1 and "pip install ai-edge-litert" in proc.stderr, proc.stderr[-3000:]
        pytest.skip(
            f"no TFLite interpreter without TensorFlow ({', '.join(EDGE_RUNTIMES)}) in {sys.executable} "
            "and MLOPS_EDGE_PYTHON is unset: the full TF-free run is not checked here (the NumPy path is, "
            "in test_the_bundle_is_self_contained...; the same CLI with TensorFlow's interpreter, below)"
        )
    proc = _on_device(python, bundle, args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["interpreter"] in EDGE_RUNTIMES
    assert np.max(np.abs(np.array(out["predictions"]) - expected[list(idx)])) <= PARITY_TOLERANCE


@pytest.mark.integration
def test_the_bundle_cli_matches_the_savedmodel_and_names_bad_input(bundle, test_split, tmp_path, capsys, monkeypatch):
    """The same CLI in-process (TensorFlow's interpreter is the fallback in the serving env)."""
    rows, expected = test_split
    _write_csv(tmp_path / "rows.csv", rows, range(30))
    model = str(bundle / "model")
    assert main(["--model-dir", model, "--csv", str(tmp_path / "rows.csv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 30
    assert np.max(np.abs(np.array(out["predictions"]) - expected[:30])) <= PARITY_TOLERANCE

    one = {
        k: (
            None
            if isinstance(v[0], (float, np.floating)) and np.isnan(v[0])
            else v[0].item()
            if isinstance(v[0], np.generic)
            else v[0]
        )
        for k, v in rows.items()
    }
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(one)))
    assert main(["--model-dir", model, "--json", "-"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["predictions"][0] - expected[0]) <= PARITY_TOLERANCE

    assert main(["--model-dir", model, "--json", json.dumps({**one, "hour": "noon"})]) == 2
    assert "input 'hour': expected numbers, got 'noon' at row 0" in capsys.readouterr().err
    assert main(["--model-dir", model, "--json", json.dumps({k: v for k, v in one.items() if k != "dest"})]) == 2
    assert "missing input(s) ['dest']" in capsys.readouterr().err
    assert main(["--model-dir", str(tmp_path / "nowhere"), "--json", json.dumps(one)]) == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.integration
def test_bundling_again_replaces_the_bundle_whole_and_never_clobbers_other_folders(real_model_dir, tmp_path):
    from serving.edge import build_bundle

    out = tmp_path / "bundle"
    args = ["bundle", "--model-dir", real_model_dir, "--out", str(out)]
    assert main(args) == 0
    before = json.loads((out / BUNDLE_INFO).read_text())
    (out / "stray.txt").write_text("left over")
    assert main(args) == 0
    assert json.loads((out / BUNDLE_INFO).read_text()) == before
    assert not (out / "stray.txt").exists()
    assert os.listdir(tmp_path) == ["bundle"]  # no temporary or old copies left beside it

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not an edge bundle"):
        build_bundle(str(precious), model_dir=real_model_dir)
    assert os.listdir(precious) == ["data.txt"]
