"""Embedded inference: the Trainer's TFLite model behind the serving predict interface, with
NumPy and a TFLite interpreter only (no TensorFlow, no server), and the bundle to copy to a device.

    python -m serving.edge --model-dir DIR --json '{"hour": 7, "carrier": "DL", ...}'
    python -m serving.edge --model-dir DIR --json '[{...}, {...}]'      (rows; - reads stdin)
    python -m serving.edge --model-dir DIR --csv rows.csv               (header = input names; - = stdin)
        -> {"model": ..., "interpreter": "ai_edge_litert", "rows": n, "predictions": [p, ...]}

    python -m serving.edge bundle --model flights@production --out DIR [--config F]
    python -m serving.edge bundle --model-dir MODEL_DIR --out DIR
        -> DIR/ model files + the four pure-Python modules + README.md + requirements.txt,
           self-contained: `cd DIR && python -m serving.edge --model-dir model --csv rows.csv`

The predict path imports serving.predictor (TFLiteModelPredictor, validate_rows) and
mlops.modeling.tflite_predictor/farmhash: NumPy only, plus the first interpreter found among
ai_edge_litert, tflite_runtime and tensorflow. Exit codes: 0 ok, 2 bad input (the message names
the input and row), 1 anything else (no interpreter, unreadable model).
See serving/EDGE.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from mlops.errors import MlopsError
from serving.predictor import PredictionInputError, TFLiteModelPredictor, validate_rows

# The modules an edge bundle needs, relative to the repository root (+ empty package __init__s).
BUNDLE_MODULES = (
    "serving/edge.py",
    "serving/predictor.py",
    "mlops/errors.py",
    "mlops/modeling/tflite_predictor.py",
    "mlops/modeling/farmhash.py",
)
BUNDLE_MODEL_DIR = "model"
BUNDLE_INFO = "bundle.json"
EDGE_RUNTIMES = ("ai_edge_litert", "tflite_runtime")  # TFLite interpreters without TensorFlow


class EdgeRuntimeMissing(MlopsError):
    """No TFLite interpreter is importable."""


# ---- input rows -----------------------------------------------------------------------------
def _rows_to_columns(rows: Sequence[object]) -> dict[str, list]:
    """[{name: value}, ...] -> {name: [values]}; every row must have the same names, so a typo in
    one row is an error rather than a silently missing value (send null for missing)."""
    if not rows:
        raise PredictionInputError("no rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PredictionInputError(
                f"row {i}: expected an object of input names to values, got {type(row).__name__}"
            )
    names = list(rows[0])
    for i, row in enumerate(rows[1:], start=1):
        if set(row) != set(names):
            missing, extra = sorted(set(names) - set(row)), sorted(set(row) - set(names))
            raise PredictionInputError(
                f"row {i}: inputs differ from row 0 (missing {missing}, extra {extra}); send null for a missing value"
            )
    return {name: [row[name] for row in rows] for name in names}


def parse_json_rows(text: str) -> dict[str, list]:
    """One row {"hour": 7, ...}, rows [{...}, ...] or columns {"hour": [7, 8], ...} -> columns.
    null is a missing value (NaN for numbers, "" for text)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PredictionInputError(f"--json: not valid JSON ({e})") from None
    if isinstance(doc, list):
        return _rows_to_columns(doc)
    if isinstance(doc, dict):
        is_list = [isinstance(v, list) for v in doc.values()]
        if doc and all(is_list):
            return doc
        if any(is_list):
            raise PredictionInputError(
                "--json: an object is either one row (scalar values) or columns (list values), not both"
            )
        return _rows_to_columns([doc])
    raise PredictionInputError(f"--json: expected an object or a list of objects, got {type(doc).__name__}")


def parse_csv_rows(text: str) -> dict[str, list]:
    """CSV with a header of input names; an empty cell is a missing value. Cells stay text:
    validate_rows parses numbers and names the input and row of one that does not parse."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise PredictionInputError("--csv: empty input (expected a header of input names)")
    if len(set(header)) != len(header):
        raise PredictionInputError(f"--csv: duplicate column names in the header {header}")
    cols: dict[str, list] = {name: [] for name in header}
    for line, record in enumerate(reader, start=2):
        if not record:
            continue
        if len(record) != len(header):
            raise PredictionInputError(f"--csv line {line}: {len(record)} cells, the header has {len(header)}")
        for name, cell in zip(header, record):
            cols[name].append(cell if cell != "" else None)
    if not cols[header[0]]:
        raise PredictionInputError("--csv: a header but no rows")
    return cols


# ---- prediction -----------------------------------------------------------------------------
def load_edge_predictor(model_dir: str) -> TFLiteModelPredictor:
    try:
        return TFLiteModelPredictor(model_dir)
    except ImportError as e:
        raise EdgeRuntimeMissing(
            f"no TFLite interpreter ({e}): pip install ai-edge-litert (or tflite-runtime on older devices)"
        ) from None


def interpreter_name(predictor: TFLiteModelPredictor) -> str:
    """The package the interpreter came from: ai_edge_litert, tflite_runtime or tensorflow."""
    return type(predictor._impl.interpreter).__module__.split(".")[0]


def predict_columns(predictor: TFLiteModelPredictor, columns: Mapping[str, object]) -> np.ndarray:
    """Checked (names, types, lengths: PredictionInputError) and predicted, as the server does."""
    checked, _ = validate_rows(predictor.inputs, columns)
    return predictor.predict(checked)


def _predict_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m serving.edge",
        description="Predict with the TFLite model "
        "(no TensorFlow needed). `python -m serving.edge bundle -h`: package a bundle.",
    )
    ap.add_argument("--model-dir", required=True, help="directory with model.tflite and tflite_preprocessing.json")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--json", help="one row, a list of rows or columns as JSON text (- reads stdin)")
    src.add_argument("--csv", help="CSV file with a header of input names (- reads stdin)")
    args = ap.parse_args(argv)
    try:
        if args.json is not None:
            columns = parse_json_rows(sys.stdin.read() if args.json == "-" else args.json)
        else:
            if args.csv == "-":
                text = sys.stdin.read()
            else:
                with open(args.csv, newline="", encoding="utf-8") as f:
                    text = f.read()
            columns = parse_csv_rows(text)
        predictor = load_edge_predictor(args.model_dir)
        predictions = predict_columns(predictor, columns)
    except PredictionInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (EdgeRuntimeMissing, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    json.dump(
        {
            "model": os.path.abspath(args.model_dir),
            "interpreter": interpreter_name(predictor),
            "rows": int(len(predictions)),
            "predictions": [float(p) for p in predictions],
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


# ---- bundle ---------------------------------------------------------------------------------
def _example_row(spec: Mapping) -> dict:
    """A plausible row for the README: training means for numbers, a known category for text."""
    means = {n["name"]: n["mean"] for n in spec["numeric"]}
    vocab = {c["name"]: [v for v in c["vocabulary"] if v != spec["missing_token"]] for c in spec["categorical"]}
    row = {}
    for f in spec["raw_features"]:
        if f["dtype"] == "float32":
            row[f["name"]] = round(float(means.get(f["name"], 0.0)), 1)
        else:
            row[f["name"]] = (vocab.get(f["name"]) or [""])[0]
    return row


def _readme(info: Mapping, spec: Mapping, example: dict, prediction: float) -> str:
    inputs = "\n".join(
        f"| `{f['name']}` | {'number' if f['dtype'] == 'float32' else 'text'} |" for f in spec["raw_features"]
    )
    return f"""# Edge bundle: {info["model"]} version {info["version"]}

Predicts `{spec["output_key"]}` with the TFLite interpreter and NumPy; no TensorFlow, no server.
Made by `python -m serving.edge bundle` from {info["source"]}; the platform's serving/EDGE.md
explains the details.

## Install (Python 3, tested with 3.11)

    pip install -r requirements.txt      # numpy + ai-edge-litert (or: pip install numpy tflite-runtime)

## Run

    python -m serving.edge --model-dir {BUNDLE_MODEL_DIR} --json '{json.dumps(example)}'
    python -m serving.edge --model-dir {BUNDLE_MODEL_DIR} --csv rows.csv     # header = input names

prints `{{"model": ..., "interpreter": "ai_edge_litert", "rows": 1, "predictions": [{prediction:.6f}]}}`
for the example row. From Python (run from this folder, or put it on PYTHONPATH):

    from serving.edge import load_edge_predictor, predict_columns
    p = load_edge_predictor("{BUNDLE_MODEL_DIR}")
    predict_columns(p, {{"hour": [7, 18], ...}})       # -> numpy array of {spec["output_key"]}

## Inputs (every one is required; null / an empty CSV cell = missing)

| input | type |
|---|---|
{inputs}

Numbers: missing -> the training mean (plus a missing indicator). Text: missing -> the
missing token; a value never seen in training -> a hashed out-of-vocabulary bucket. Integers
sent for a text input are read as their decimal text (month 7 -> "7").

## Files

- `{BUNDLE_MODEL_DIR}/model.tflite`, `{BUNDLE_MODEL_DIR}/tflite_preprocessing.json`: the model and the
  preprocessing constants (means, stds, bucket boundaries, vocabularies)
- `serving/edge.py`, `serving/predictor.py`, `mlops/modeling/tflite_predictor.py`,
  `mlops/modeling/farmhash.py`: the code (NumPy only)
- `{BUNDLE_INFO}`: model name, version, source and the sha256 of every file
"""


def _copy_uri(src_uri: str, dst_path: str) -> None:
    from mlops import storage

    with open(dst_path, "wb") as f:
        f.write(storage.read_bytes(src_uri))


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_tflite_files(
    *, selector: str | None = None, model_dir: str | None = None, config=None
) -> tuple[dict, str, str]:
    """({model, version, source}, tflite URI, preprocessing URI) of a registry version or a dir."""
    from mlops.modeling.tflite_predictor import MODEL_FILE, PREPROCESSING_FILE

    if (selector is None) == (model_dir is None):
        raise ValueError("give either a registry selector (--model) or a model directory (--model-dir)")
    if model_dir is not None:
        from mlops.config import join_uri

        info = {"model": os.path.basename(os.path.normpath(model_dir)), "version": "dir", "source": model_dir}
        return info, join_uri(model_dir, MODEL_FILE), join_uri(model_dir, PREPROCESSING_FILE)
    from mlops.registry.store import ModelRegistry

    mv = ModelRegistry.from_config(config).resolve(selector)
    tflite, prep = mv.file_uri("tflite"), mv.file_uri("tflite_preprocessing")
    if not tflite or not prep:
        raise ValueError(
            f"{mv.selector} has no TFLite export (model.tflite + tflite_preprocessing.json); "
            "the Trainer writes it when the model converts"
        )
    return {"model": mv.name, "version": str(mv.version), "source": f"{selector} ({mv.uri})"}, tflite, prep


def build_bundle(out_dir: str, *, selector: str | None = None, model_dir: str | None = None, config=None) -> dict:
    """Writes the edge bundle to out_dir (built beside it, checked, then renamed into place: a re-run
    replaces a previous bundle whole, a failure leaves it untouched). Returns bundle.json's content."""
    import shutil
    import tempfile

    from mlops.modeling.tflite_predictor import MODEL_FILE, PREPROCESSING_FILE

    info, tflite_uri, prep_uri = resolve_tflite_files(selector=selector, model_dir=model_dir, config=config)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.exists(os.path.join(out_dir, BUNDLE_INFO)):
        raise FileExistsError(f"--out {out_dir} exists and is not an edge bundle (no {BUNDLE_INFO}); not replacing it")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, BUNDLE_MODEL_DIR))
        _copy_uri(tflite_uri, os.path.join(tmp, BUNDLE_MODEL_DIR, MODEL_FILE))
        _copy_uri(prep_uri, os.path.join(tmp, BUNDLE_MODEL_DIR, PREPROCESSING_FILE))
        for rel in BUNDLE_MODULES:
            os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
            shutil.copyfile(os.path.join(repo, rel), os.path.join(tmp, rel))
        for package in ("mlops", "mlops/modeling", "serving"):  # empty: the repo's may import more
            with open(os.path.join(tmp, package, "__init__.py"), "w") as f:
                f.write('"""Edge bundle subset (see README.md)."""\n')
        with open(os.path.join(tmp, "requirements.txt"), "w") as f:
            f.write("numpy\nai-edge-litert  # or tflite-runtime; either replaces TensorFlow\n")

        # The bundle must work before it replaces anything: predict the README's example with it.
        with open(os.path.join(tmp, BUNDLE_MODEL_DIR, PREPROCESSING_FILE)) as f:
            spec = json.load(f)
        example = _example_row(spec)
        predictor = load_edge_predictor(os.path.join(tmp, BUNDLE_MODEL_DIR))
        prediction = float(predict_columns(predictor, {k: [v] for k, v in example.items()})[0])
        del predictor
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(_readme(info, spec, example, prediction))

        files = sorted(os.path.relpath(os.path.join(d, n), tmp) for d, _, names in os.walk(tmp) for n in names)
        info = {
            **info,
            "example": example,
            "example_prediction": prediction,
            "files": {rel: _sha256(os.path.join(tmp, rel)) for rel in files},
        }
        with open(os.path.join(tmp, BUNDLE_INFO), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
        for d, _, names in os.walk(tmp):  # mkdtemp makes 0700; a bundle is meant to be copied and read
            os.chmod(d, 0o755)
            for n in names:
                os.chmod(os.path.join(d, n), 0o644)
        old = None
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "bundle"))
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _bundle_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m serving.edge bundle", description="Package a self-contained edge bundle (TFLite + NumPy code)."
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registry selector: NAME, NAME@ALIAS or NAME@VERSION")
    src.add_argument("--model-dir", help="a model directory (or storage URI) with model.tflite")
    ap.add_argument("--out", required=True, help="bundle directory (replaced if it is a previous bundle)")
    ap.add_argument("--config", default=None, help="platform config (env MLOPS_CONFIG; default configs/flights.yaml)")
    args = ap.parse_args(argv)
    from mlops.config import ConfigError, load_config
    from mlops.registry.errors import RegistryError

    try:
        config = None
        if args.model:
            from mlops.config import DEFAULT_CONFIG_PATH

            config = load_config(args.config or DEFAULT_CONFIG_PATH)
        info = build_bundle(args.out, selector=args.model, model_dir=args.model_dir, config=config)
    except PredictionInputError as e:
        print(f"error: the bundled model failed its example row: {e}", file=sys.stderr)
        return 1
    except (ConfigError, RegistryError, EdgeRuntimeMissing, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "bundle": os.path.abspath(args.out),
                "model": info["model"],
                "version": info["version"],
                "files": sorted(info["files"]),
            }
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bundle":
        return _bundle_main(argv[1:])
    return _predict_main(argv)


if __name__ == "__main__":
    sys.exit(main())
