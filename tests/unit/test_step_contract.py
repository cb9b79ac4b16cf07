"""One executor contract for every step (mlops.steps): `execute(config, inputs, outputs, context,
**params) -> StepResult`, and component bodies that only map KFP's parameters to that call."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

from tests.support.fixtures import REPO

# The steps of the training pipeline that consume and produce artifacts.
CONTRACT_STEPS = [
    "example_gen",
    "statistics_gen",
    "schema_gen",
    "example_validator",
    "transform",
    "trainer",
    "evaluator",
    "pusher",
]


@pytest.mark.parametrize("step", CONTRACT_STEPS)
def test_executor_exposes_the_one_call_shape(step):
    from mlops.steps import StepResult

    execute = importlib.import_module(f"components.{step}.executor").execute
    params = list(inspect.signature(execute).parameters.values())
    assert [p.name for p in params[:4]] == ["config", "inputs", "outputs", "context"]
    assert all(p.kind == p.KEYWORD_ONLY for p in params[4:])  # the step's own parameters
    assert inspect.signature(execute).return_annotation in ("StepResult", StepResult)


@pytest.mark.parametrize("step", CONTRACT_STEPS)
def test_component_body_calls_only_execute(step):
    """The KFP function calls its executor through `execute` and nothing else of it."""
    tree = ast.parse((REPO / "components" / step / "component.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == f"components.{step}.executor"
        for alias in node.names
    }
    assert "execute" in imported
    assert imported - {"execute"} <= {"LOGS", "SUMMARY_MD", "HTML_FILE"}  # constants only, no second entry point


@pytest.mark.parametrize(
    "module",
    sorted(
        f"components.{path.parent.name}.{path.stem}"
        for path in (REPO / "components").glob("*/*.py")
        if "CODE_VERSION =" in path.read_text()
    ),
)
def test_code_version_is_read_from_the_import_graph(module):
    """A code version recorded in ML Metadata (and keying the step cache) is `source_version`'s hash
    of the step's import graph, never a hand-kept string someone forgets to bump."""
    import re

    version = importlib.import_module(module).CODE_VERSION
    assert re.fullmatch(r"[a-z_]+/[0-9a-f]{12}", version), f"{module}.CODE_VERSION = {version!r}"
