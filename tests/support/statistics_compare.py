"""Statistics compared as values: two DatasetFeatureStatisticsLists are the same when every field
is equal, numbers within a relative tolerance (summation order differs between runners), and the
features are taken in name order (a distributed runner may list them in another)."""

from __future__ import annotations

import math

from google.protobuf import json_format


def _normalised(stats) -> dict:
    body = json_format.MessageToDict(stats)
    for dataset in body.get("datasets", []):
        dataset["features"] = sorted(dataset.get("features", []), key=lambda f: f["path"]["step"])
    return body


def _differences(a, b, where: str, rel: float) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _differences(a[k], b[k], f"{where}.{k}", rel)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]", rel)]
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=rel, abs_tol=rel) else [f"{where}: {a} vs {b}"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def statistics_differences(a, b, rel: float = 1e-9) -> list[str]:
    """Where two statistics lists differ (empty: the same statistics)."""
    return _differences(_normalised(a), _normalised(b), "", rel)
