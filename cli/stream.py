"""`mlops stream`: answer prediction requests from a Redis stream (serving/stream.py).

Registered by cli/main.py.
"""

from __future__ import annotations

from dataclasses import asdict

import click

from cli.common import config_option, console, emit_json, load_with_overrides, runs_in
from mlops import envs
from mlops.errors import MlopsError


@click.command("stream")
@config_option
@click.option(
    "--model",
    "model",
    metavar="NAME[@ALIAS|@VERSION]",
    help="Registry selector or model directory (default: serving.model, else the project's name).",
)
@click.option(
    "--consumer",
    help="Consumer name in the group (default: the host name, i.e. the pod). A consumer "
    "restarted under its name answers its unacknowledged events first.",
)
@click.option(
    "--max-events",
    type=click.IntRange(min=1),
    help="Stop after this many events (default: run until SIGTERM or Ctrl-C).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=JSON",
    help="Config override, e.g. serving.stream.batch_size=512 (repeatable).",
)
@runs_in(envs.SERVING)
def stream(config_path, model, consumer, max_events, overrides):
    """Consume prediction requests from serving.stream.input_stream (consumer group, at least once
    in, one answer per request id out, malformed events to the dead-letter stream). A broker that
    goes away is waited for (reconnects with backoff, nothing lost); one unreachable at the start
    exits 75. SIGTERM finishes and acknowledges the batch in hand, then exits; the counters are
    printed as JSON."""
    import signal

    from serving.handle import ModelHandle
    from serving.payload_log import PayloadLogger
    from serving.stream import StreamConsumer

    cfg = load_with_overrides(config_path, overrides)
    spec = cfg.serving.stream
    try:
        handle = ModelHandle.from_config(cfg, model)
    except (MlopsError, FileNotFoundError, LookupError) as e:
        raise click.BadParameter(f"{model or cfg.serving.model or cfg.project}: {e}", param_hint="--model") from None
    logger = PayloadLogger.from_config(cfg)
    # Redis must answer at the start (a wrong URL fails now, exit 75 = try again later); once
    # running, the consumer rides out broker outages (reconnects with backoff).
    worker = StreamConsumer(cfg, handle, logger, consumer=consumer)
    worker.ensure_group()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    handle.start_watching()
    console().print(
        f"{worker.consumer}: {handle.current.label} answering {spec.input_stream} -> "
        f"{spec.output_stream} (group {spec.group}, dead letters: {spec.dead_letter_stream})"
    )
    try:
        stats = worker.run(max_events=max_events)
    finally:
        handle.stop()
        logger.close()
    emit_json(asdict(stats))
