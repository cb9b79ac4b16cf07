"""python -m serving: the online model server (KServe custom runtime).

    python -m serving --config configs/flights.yaml --model flights@production \\
        [--runtime auto|tflite|savedmodel] [--host 127.0.0.1] [--http_port 8080] [--grpc_port 8081] \\
        [--set serving.reload_interval_s=1] [KServe's own flags: --max_threads, --enable_grpc, ...]

Built the way KServe's runtimes are: this parser extends `kserve.model_server.parser`, so every
KServe flag works; the model is a `kserve.Model` (serving.model), the server KServe's ModelServer
(serving.server). `--model` is a registry selector (NAME, NAME@ALIAS, NAME@VERSION) read from the
artifact store, or a model directory / storage URI, e.g. `--model_dir /mnt/models` where KServe's
storage initializer mounts an InferenceService's storageUri.

Defaults come from the config's `serving:` section (host, ports, runtime, limits, reload
interval, payload log); flags win. With KServe's `--predictor_host` (+ `--predictor_protocol v2`
or `grpc-v2`) this process is the transformer: it enriches from Feast and forwards the complete
model inputs to a predictor deployment of the same server (whose config sets
serving.feature_lookup false).

Exit status 1 if the model cannot be loaded, 75 if a port is taken (one line naming it); SIGTERM
stops gracefully within serving.shutdown_grace_s (serving.server).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

from mlops.errors import MlopsError, status_of

log = logging.getLogger("mlops.serving")


def _import_kserve_server():
    """kserve.model_server parses sys.argv when imported, allowing abbreviations: our --config
    would be taken for its --configure_logging. It is imported with an empty command line; the
    parser below, which extends its parser, reads the real one."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        from kserve import model_server
    finally:
        sys.argv = argv
    return model_server


kserve_server = _import_kserve_server()

DEFAULT_CONFIG = os.environ.get(
    "MLOPS_CONFIG", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "flights.yaml")
)

parser = argparse.ArgumentParser(
    prog="python -m serving",
    parents=[kserve_server.parser],
    description="The mlops online model server (KServe v1/v2 REST and gRPC).",
)
parser.add_argument("--config", default=DEFAULT_CONFIG, help="Platform config YAML (env MLOPS_CONFIG).")
parser.add_argument(
    "--model",
    help="NAME[@ALIAS|@VERSION] in the registry, or a model directory / URI "
    "(default: serving.model, else the project name).",
)
parser.add_argument(
    "--model_dir", help="A model directory (KServe's storage initializer mounts /mnt/models); same as --model DIR."
)
parser.add_argument(
    "--runtime",
    choices=["savedmodel", "tflite", "auto"],
    help="Default: serving.runtime (auto: TFLite for small batches, the SavedModel for large).",
)
parser.add_argument("--host", help="Address to bind, REST and gRPC (default: serving.host).")
parser.add_argument(
    "--set",
    dest="overrides",
    action="append",
    default=[],
    metavar="KEY=JSON",
    help="Config override, e.g. serving.reload_interval_s=1 (repeatable).",
)
parser.add_argument(
    "--predict_threads",
    type=int,
    help="Threads for Feast reads and model calls (default: one per core; 0: in the event loop).",
)
parser.add_argument(
    "--per_request_logs",
    action="store_true",
    help="Access log and KServe's timing log lines for every request (off: they cost ~0.1 ms).",
)
# Defaults that the config provides unless the flag is given (KServe's own defaults are fixed ports).
parser.set_defaults(http_port=None, grpc_port=None, model_name=None, enable_latency_logging=None)


def overrides_of(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set {item!r}: expected KEY=JSON")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


def build(args: argparse.Namespace):
    """(model, server) for parsed arguments; nothing is loaded or bound yet."""
    from kserve import PredictorConfig

    from mlops.config import ConfigError, load_config
    from serving.model import RegistryModel
    from serving.server import ModelServer

    try:
        config = load_config(args.config, overrides=overrides_of(args.overrides))
    except ConfigError as e:
        parser.error(str(e))
    serving = config.serving
    source = args.model_dir or args.model or serving.model or config.project
    if args.predictor_host and args.predictor_protocol == "v1":
        parser.error(
            "--predictor_host: this transformer talks to its predictor with --predictor_protocol v2 or grpc-v2"
        )
    kserve_server.args = args  # what its import-time parse would have read (--configure_logging, ...)
    model = RegistryModel(config, source, name=args.model_name, runtime=args.runtime, threads=args.predict_threads)
    # What KServe's ModelServer would build from its own parse of sys.argv (see _import_kserve_server).
    predictor_config = PredictorConfig(
        predictor_host=args.predictor_host,
        predictor_protocol=args.predictor_protocol,
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
        predictor_request_retries=args.predictor_request_retries,
        predictor_health_check=args.enable_predictor_health_check,
    )
    latency_logging = args.per_request_logs if args.enable_latency_logging is None else args.enable_latency_logging
    server = ModelServer(
        host=args.host or serving.host,
        http_port=serving.http_port if args.http_port is None else args.http_port,
        grpc_port=serving.grpc_port if args.grpc_port is None else args.grpc_port,
        max_request_bytes=serving.max_request_bytes,
        per_request_logs=args.per_request_logs,
        shutdown_grace_s=serving.shutdown_grace_s,
        enable_latency_logging=latency_logging,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        access_log_format=args.access_log_format,
        timeout_keep_alive=args.timeout_keep_alive,
        event_loop=args.event_loop,
        predictor_config=predictor_config,
        kserve_args=vars(args),
    )
    return model, server


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # KServe's own routes use ORJSONResponse, which this FastAPI deprecates: not ours to fix.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model, server = build(args)
    try:
        server.start([model])
    except MlopsError as e:  # a busy port: one line, not uvicorn's and gRPC's tracebacks
        log.error("%s", e)
        raise SystemExit(status_of(e).exit_code) from None


if __name__ == "__main__":
    main(sys.argv[1:])
