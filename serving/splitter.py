"""A traffic splitter in front of two model servers: the local stand-in for KServe's canary
(canaryTrafficPercent), an InferenceGraph Splitter, and an Istio mirror.

    python -m serving.splitter --champion http://127.0.0.1:8080 --challenger http://127.0.0.1:8082 \\
        --mode canary|ab|shadow [--percent 10] [--ab-key carrier] [--port 8090] [--traffic-log FILE]

It speaks the Open Inference Protocol v2 REST path: `POST /v2/models/{name}/infer` goes to one
upstream, the answer (status, body) is passed back unchanged, with headers saying which arm
answered (`x-mlops-arm`: champion|challenger) and which version (`x-mlops-model-version`, from the
answer's model_version). Health and metadata calls go to the champion.

Modes:
    canary  each request goes to the challenger with probability percent/100 (seeded RNG)
    ab      sticky: the request key (a header named --ab-key, else the first value of the input
            tensor of that name) is hashed into 10,000 buckets; buckets below percent*100 go to
            the challenger, so one key always meets the same version
    shadow  the champion answers every request; a copy goes to the challenger in the background,
            its answer is logged and dropped. The mirror never delays or fails the answer: it starts
            after the champion's answer is ready, has its own deadline, and beyond --max-mirrors
            in flight a copy is skipped (counted)

Each routed call (mirrors too) is one JSON line in --traffic-log: request id, arm, model version,
HTTP status, upstream latency in ms, mirror flag; the comparison (mlops.rollout) reads its
latencies. The servers' payload logs carry each answer's version per row.

Errors: a bad request part (no JSON, a missing A/B key) is a 400 naming it; an unreachable
upstream is a 503 naming it (mlops.errors.status_of). This module needs only starlette, uvicorn
and httpx (both environments have them), never ML Metadata or KServe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass

from mlops.errors import InvalidInput, MlopsError, Unavailable, status_of

log = logging.getLogger("mlops.serving.splitter")

MODES = ("canary", "ab", "shadow")
CHAMPION, CHALLENGER = "champion", "challenger"
AB_BUCKETS = 10_000


class SplitterConfigError(InvalidInput):
    """A splitter option is wrong (mode, percent, URL, A/B key)."""


class UpstreamUnavailable(Unavailable):
    """A model server behind the splitter did not answer."""


@dataclass(frozen=True)
class Route:
    champion: str
    challenger: str
    mode: str = "canary"
    percent: float = 10.0
    ab_key: str | None = None
    seed: int | None = None
    timeout_s: float = 30.0
    mirror_timeout_s: float = 5.0
    max_mirrors: int = 64

    def __post_init__(self):
        if self.mode not in MODES:
            raise SplitterConfigError(f"--mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if not 0 <= self.percent <= 100:
            raise SplitterConfigError(f"--percent: {self.percent} is not within [0, 100]")
        if self.mode == "ab" and not self.ab_key:
            raise SplitterConfigError("--ab-key: the A/B mode needs a request key (a header or input tensor name)")
        for option, url in (("--champion", self.champion), ("--challenger", self.challenger)):
            if not url.startswith(("http://", "https://")):
                raise SplitterConfigError(f"{option}: {url!r} is not an http(s) URL")


def ab_bucket(key: str) -> int:
    """The A/B bucket of a request key: stable across processes and runs (not Python's hash)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % AB_BUCKETS


def ab_arm(key: str, percent: float) -> str:
    return CHALLENGER if ab_bucket(key) < percent * AB_BUCKETS / 100 else CHAMPION


def request_key(body: dict, headers, name: str) -> str:
    """The A/B key of a request: header `name`, else the first value of input tensor `name`."""
    if name in headers:
        return headers[name]
    for tensor in body.get("inputs") or []:
        if isinstance(tensor, dict) and tensor.get("name") == name:
            data = tensor.get("data")
            while isinstance(data, list) and data:
                data = data[0]
            if data is not None and not isinstance(data, list):
                return str(data)
    raise InvalidInput(f"request: no A/B key {name!r} (neither a header nor an input tensor with a value)")


class TrafficLog:
    """One JSON line per routed call, appended by the event loop's thread (line-buffered)."""

    def __init__(self, path: str | None):
        self._file = open(path, "a", buffering=1) if path else None  # noqa: SIM115 (closed by close())
        self._lock = threading.Lock()

    def write(self, **record) -> None:
        if self._file is not None:
            with self._lock:
                self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def build_app(route: Route, traffic_log_path: str | None = None):
    """The splitter as an ASGI app (starlette)."""
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route as Path

    rng = random.Random(route.seed)
    counts: Counter = Counter()
    mirrors: set[asyncio.Task] = set()
    traffic = TrafficLog(traffic_log_path)
    upstream = {CHAMPION: route.champion.rstrip("/"), CHALLENGER: route.challenger.rstrip("/")}
    client = httpx.AsyncClient(timeout=route.timeout_s, limits=httpx.Limits(max_connections=200))

    def error(e: MlopsError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=status_of(e).http)

    def choose(body: dict, headers) -> str:
        if route.mode == "canary":
            return CHALLENGER if rng.random() * 100 < route.percent else CHAMPION
        if route.mode == "ab":
            return ab_arm(request_key(body, headers, route.ab_key), route.percent)
        return CHAMPION

    async def call(arm: str, path: str, content: bytes, headers: dict, request_id, *, mirror: bool, timeout: float):
        started = time.perf_counter()
        try:
            response = await client.post(upstream[arm] + path, content=content, headers=headers, timeout=timeout)
        except httpx.HTTPError as e:
            counts[f"{arm}_errors"] += 1
            traffic.write(
                ts=time.time(), request_id=request_id, arm=arm, version=None, status=None, mirror=mirror,
                latency_ms=round((time.perf_counter() - started) * 1000, 3), error=type(e).__name__,
            )  # fmt: skip
            raise UpstreamUnavailable(f"{arm} {upstream[arm]}: {type(e).__name__}: {e}".rstrip(": ")) from None
        latency_ms = (time.perf_counter() - started) * 1000
        version = None
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                version = response.json().get("model_version")
            except (ValueError, AttributeError):
                pass
        counts[f"{arm}_{'mirrored' if mirror else 'answered'}"] += 1
        traffic.write(
            ts=time.time(), request_id=request_id, arm=arm, version=version, status=response.status_code,
            mirror=mirror, latency_ms=round(latency_ms, 3),
        )  # fmt: skip
        return response, version

    async def mirror_copy(path, content, headers, request_id):
        try:
            await call(CHALLENGER, path, content, headers, request_id, mirror=True, timeout=route.mirror_timeout_s)
        except MlopsError:
            pass  # counted and logged by call(); a mirror's failure is never the caller's
        except Exception:  # noqa: BLE001 (a background copy must not leave an unretrieved exception)
            counts["challenger_errors"] += 1
            log.exception("mirror to the challenger failed")

    async def infer(request):
        content = await request.body()
        try:
            body = json.loads(content or b"null")
        except ValueError as e:
            return error(InvalidInput(f"request body: not JSON ({e})"))
        if not isinstance(body, dict):
            return error(InvalidInput("request body: a v2 inference request is a JSON object"))
        try:
            arm = choose(body, request.headers)
        except MlopsError as e:
            return error(e)
        headers = {"content-type": "application/json"}
        if "x-request-id" in request.headers:
            headers["x-request-id"] = request.headers["x-request-id"]
        request_id = body.get("id") or request.headers.get("x-request-id")
        try:
            response, version = await call(
                arm, request.url.path, content, headers, request_id, mirror=False, timeout=route.timeout_s
            )
        except MlopsError as e:
            return error(e)
        if route.mode == "shadow":
            if len(mirrors) < route.max_mirrors:
                task = asyncio.get_running_loop().create_task(
                    mirror_copy(request.url.path, content, headers, request_id)
                )
                mirrors.add(task)
                task.add_done_callback(mirrors.discard)
            else:
                counts["mirrors_skipped"] += 1
        out_headers = {"x-mlops-arm": arm}
        if version is not None:
            out_headers["x-mlops-model-version"] = str(version)
        return Response(
            response.content,
            status_code=response.status_code,
            headers=out_headers,
            media_type=response.headers.get("content-type"),
        )

    async def champion_get(request):
        try:
            response = await client.get(upstream[CHAMPION] + request.url.path, timeout=route.timeout_s)
        except httpx.HTTPError as e:
            return error(UpstreamUnavailable(f"champion {upstream[CHAMPION]}: {type(e).__name__}"))
        return Response(response.content, response.status_code, media_type=response.headers.get("content-type"))

    async def stats(_request):
        return JSONResponse(
            {"mode": route.mode, "percent": route.percent, "mirrors_in_flight": len(mirrors), "counts": dict(counts)}
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if mirrors:  # copies still in flight finish (within their deadline) before the exit
            await asyncio.wait(list(mirrors), timeout=route.mirror_timeout_s)
        await client.aclose()
        traffic.close()

    return Starlette(
        routes=[
            Path("/v2/models/{model}/infer", infer, methods=["POST"]),
            Path("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
            Path("/splitter/stats", stats, methods=["GET"]),
            Path("/v2/health/live", champion_get, methods=["GET"]),
            Path("/v2/health/ready", champion_get, methods=["GET"]),
            Path("/v2/models/{model}", champion_get, methods=["GET"]),
            Path("/v2/models/{model}/ready", champion_get, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.splitter", description=__doc__.split("\n\n")[0])
    p.add_argument("--champion", required=True, help="Base URL of the server of the production version.")
    p.add_argument("--challenger", required=True, help="Base URL of the server of the new version.")
    p.add_argument("--mode", choices=MODES, default="canary")
    p.add_argument("--percent", type=float, default=10.0, help="canary / ab: the challenger's share in percent.")
    p.add_argument("--ab-key", help="ab: the header or input tensor whose value keeps a caller on one arm.")
    p.add_argument("--seed", type=int, help="canary: seed of the routing RNG (reproducible splits).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--traffic-log", help="Append one JSON line per routed call (latency per version).")
    p.add_argument("--mirror-timeout", type=float, default=5.0, help="shadow: the mirror's own deadline (s).")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        route = Route(
            args.champion,
            args.challenger,
            mode=args.mode,
            percent=args.percent,
            ab_key=args.ab_key,
            seed=args.seed,
            mirror_timeout_s=args.mirror_timeout,
        )
    except MlopsError as e:
        print(f"python -m serving.splitter: {e}", file=sys.stderr)
        return status_of(e).exit_code
    import uvicorn

    log.info(
        "splitter %s (%s%%) on %s:%d: champion %s, challenger %s",
        route.mode, route.percent, args.host, args.port, route.champion, route.challenger,
    )  # fmt: skip
    uvicorn.run(build_app(route, args.traffic_log), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
