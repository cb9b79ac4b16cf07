"""Test routing between the two environments.

`make test` runs pytest once per environment over the same tree. Tests marked `serving_env`
run only under the serving interpreter (TF 2.21, kserve, feast 0.67); every other test runs only
under the pipeline interpreter (TFX 1.16, MLMD, kfp 2.13). Nothing is silently skipped: a test
routed to the other environment is deselected, and counted there.
"""

import importlib.util

import pytest

pytest_plugins = ["tests.fixtures"]

IN_SERVING_ENV = importlib.util.find_spec("kserve") is not None


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        wants_serving = item.get_closest_marker("serving_env") is not None
        (keep if wants_serving == IN_SERVING_ENV else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
