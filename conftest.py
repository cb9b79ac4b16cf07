"""Test routing between the two environments.

`make test` runs pytest once per environment over the same tree. Tests marked `serving_env`
run only under the serving interpreter (TF 2.21, kserve, feast 0.67); every other test runs only
under the pipeline interpreter (TFX 1.16, MLMD, kfp 2.13). Nothing is silently skipped: a test
routed to the other environment is deselected, and counted there.

In the serving environment only test modules that mention the marker are collected: the rest
may import pipeline-only libraries (ml_metadata, TFX) that do not exist there. A module with
tests for both environments must therefore import such libraries inside its pipeline tests.
"""

import importlib.util

pytest_plugins = ["tests.support.fixtures"]

IN_SERVING_ENV = importlib.util.find_spec("kserve") is not None


def pytest_ignore_collect(collection_path, config):
    if not IN_SERVING_ENV or collection_path.suffix != ".py":
        return None
    name = collection_path.name
    if not (name.startswith("test_") or name.endswith("_test.py")):
        return None
    return None if b"mark.serving_env" in collection_path.read_bytes() else True


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        wants_serving = item.get_closest_marker("serving_env") is not None
        (keep if wants_serving == IN_SERVING_ENV else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
