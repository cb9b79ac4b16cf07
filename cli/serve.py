"""`mlops serve`: the online model server on this machine (serving/__main__.py).

Registered by cli/main.py.
"""

from __future__ import annotations

import os
import sys

import click

from cli.common import config_option, load_with_overrides, runs_in
from mlops import envs
from mlops.errors import MlopsError


@click.command("serve")
@config_option
@click.option(
    "--model",
    "model",
    metavar="NAME[@ALIAS|@VERSION]|DIR",
    help="Registry selector or model directory / URI (default: serving.model, else the project's name).",
)
@click.option("--host", help="Address to bind, REST and gRPC (default: serving.host, 127.0.0.1).")
@click.option("--http-port", type=click.IntRange(0, 65535), help="Default: serving.http_port (8080).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), help="Default: serving.grpc_port (8081).")
@click.option(
    "--runtime",
    type=click.Choice(["savedmodel", "tflite", "auto"]),
    help="Default: serving.runtime (auto: TFLite for small batches, the SavedModel for large).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=JSON",
    help="Config override, e.g. serving.reload_interval_s=1 (repeatable).",
)
@click.option("--per-request-logs", is_flag=True, help="Access log and latency log line for every request.")
@runs_in(envs.SERVING)
def serve(config_path, model, host, http_port, grpc_port, runtime, overrides, per_request_logs):
    """Serve a registered model online: KServe v1 and v2 (Open Inference Protocol) REST and gRPC,
    Feast enrichment, hot reload of its alias, Prometheus /metrics. Runs until SIGTERM or Ctrl-C.

    The process becomes `python -m serving ...`, the same entry point a KServe InferenceService
    runs, so signals and exit status are the server's own."""
    from serving.handle import _is_dir_source

    cfg = load_with_overrides(config_path, overrides)
    source = model or cfg.serving.model or cfg.project
    if not _is_dir_source(source):  # a wrong selector fails here, in milliseconds, not after start-up
        from mlops.registry.store import ModelRegistry

        try:
            ModelRegistry.from_config(cfg).resolve(source)
        except (MlopsError, LookupError) as e:
            raise click.BadParameter(f"{source}: {e}", param_hint="--model") from None
    argv = [sys.executable, "-m", "serving", "--config", config_path, "--model", source]
    for flag, value in (
        ("--host", host),
        ("--http_port", http_port),
        ("--grpc_port", grpc_port),
        ("--runtime", runtime),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for item in overrides:
        argv += ["--set", item]
    if per_request_logs:
        argv.append("--per_request_logs")
    # The server logs each start-up phase once its logging is set up (after ~2 s of imports).
    click.echo(f"mlops serve: starting the model server for {source} (python -m serving)", err=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(envs.REPO_ROOT), env.get("PYTHONPATH")]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
