"""A closed-loop load generator on 127.0.0.1: REST (aiohttp, keep-alive) and gRPC (grpc.aio).

    stats = run_rest(url, [body, ...], concurrency=1, warmup_s=2, duration_s=10)
    stats = run_grpc(target, [request, ...], concurrency=8, ...)
    stats = measure_calls(fn, duration_s=3)            # an in-process call, same statistics

Closed loop: `concurrency` workers each send a request, wait for its answer, send the next. With
one worker the percentiles are the latency of an idle server; with several, requests/s is the
throughput the server sustains (its queueing shows in the percentiles). Requests finishing during
the warm-up are not counted; the measured window is fixed in time. Requests cycle through the
given bodies; every answer must be HTTP 200 / gRPC OK: errors are counted and the first message
kept, not timed (bench/serving.py checks the predictions themselves once, outside the loop).

The client shares the machine with the server: `client_cpu_s` (this process's CPU seconds during
the window) says how much of the 2 cores the generator itself took.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np


def summarize(
    latencies_s: list[float],
    elapsed_s: float,
    *,
    errors: int = 0,
    first_error: str | None = None,
    rows_per_call: int = 1,
    client_cpu_s: float | None = None,
) -> dict:
    """Latency percentiles (ms) and throughput of one measured window."""
    lat = np.asarray(latencies_s, dtype=np.float64) * 1e3
    out = {"calls": int(len(lat)), "errors": int(errors), "seconds": round(elapsed_s, 3)}
    if len(lat):
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        out.update(
            {
                "p50_ms": round(float(p50), 3),
                "p90_ms": round(float(p90), 3),
                "p99_ms": round(float(p99), 3),
                "max_ms": round(float(lat.max()), 3),
                "mean_ms": round(float(lat.mean()), 3),
                "calls_per_s": round(len(lat) / elapsed_s, 1),
                "rows_per_s": round(len(lat) * rows_per_call / elapsed_s, 1),
            }
        )
    if first_error:
        out["first_error"] = first_error[:500]
    if client_cpu_s is not None:
        out["client_cpu_s"] = round(client_cpu_s, 3)
    return out


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


async def closed_loop(
    send: Callable[[], Awaitable[None]], *, concurrency: int, warmup_s: float, duration_s: float
) -> dict:
    """Runs `send` (raises on a bad answer) from `concurrency` workers: warm-up, then a timed window."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    window_start, window_end = start + warmup_s, start + warmup_s + duration_s
    latencies: list[float] = []
    errors = [0]
    first_error: list[str] = []

    async def worker():
        perf = time.perf_counter
        while True:
            now = loop.time()
            if now >= window_end:
                return
            t0 = perf()
            try:
                await send()
            except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                if loop.time() >= window_start:
                    errors[0] += 1
                    if not first_error:
                        first_error.append(f"{type(e).__name__}: {e}")
                continue
            t1 = perf()
            # Counted if it finished inside the window (a request started in the warm-up included:
            # in a closed loop every worker is busy all the time, so no gap is hidden).
            if window_start <= loop.time() <= window_end:
                latencies.append(t1 - t0)

    await asyncio.sleep(0)
    cpu0 = None

    async def cpu_mark():
        nonlocal cpu0
        await asyncio.sleep(max(0.0, window_start - loop.time()))
        cpu0 = _cpu_seconds()

    marker = asyncio.ensure_future(cpu_mark())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await marker
    cpu = _cpu_seconds() - cpu0 if cpu0 is not None else None
    return summarize(
        latencies, duration_s, errors=errors[0], first_error=first_error[0] if first_error else None, client_cpu_s=cpu
    )


def run_rest(
    url: str, bodies: Sequence[bytes], *, concurrency: int = 1, warmup_s: float = 2.0, duration_s: float = 10.0
) -> dict:
    """POSTs the JSON `bodies` in turn to `url` in a closed loop over keep-alive connections (one
    per worker)."""
    import aiohttp

    async def main():
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        headers = {"Content-Type": "application/json"}
        turn = itertools.cycle(bodies)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def send():
                async with session.post(url, data=next(turn), headers=headers) as r:
                    payload = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {payload[:300]!r}")

            return await closed_loop(send, concurrency=concurrency, warmup_s=warmup_s, duration_s=duration_s)

    return asyncio.run(main())


def run_grpc(
    target: str, requests: Sequence[object], *, concurrency: int = 1, warmup_s: float = 2.0, duration_s: float = 10.0
) -> dict:
    """ModelInfer with the `requests` in turn on the Open Inference Protocol v2 gRPC service, one
    channel shared by the workers (HTTP/2 multiplexes them, as a real client does)."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    async def main():
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        ) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            turn = itertools.cycle(requests)

            async def send():
                await stub.ModelInfer(next(turn))

            return await closed_loop(send, concurrency=concurrency, warmup_s=warmup_s, duration_s=duration_s)

    return asyncio.run(main())


def measure_calls(
    fn: Callable[[], object], *, duration_s: float = 3.0, warmup_calls: int = 20, rows_per_call: int = 1
) -> dict:
    """An in-process call repeated for `duration_s` (after warm-up calls), same statistics."""
    for _ in range(warmup_calls):
        fn()
    latencies = []
    perf = time.perf_counter
    cpu0 = _cpu_seconds()
    start = perf()
    end = start + duration_s
    while True:
        t0 = perf()
        if t0 >= end:
            break
        fn()
        latencies.append(perf() - t0)
    elapsed = perf() - start
    return summarize(latencies, elapsed, rows_per_call=rows_per_call, client_cpu_s=_cpu_seconds() - cpu0)
