"""The layering holds: mlops (core) -> components, serving -> pipelines -> cli; tests on top.

Read from the source (every import statement, module level or inside functions), so an import
added anywhere that points up a layer fails here, not in an image that lacks the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.fixtures import REPO

# What each production package may import from the project (itself always).
ALLOWED = {
    "mlops": set(),
    "serving": {"mlops"},
    # batch_predict runs serving's batch engine inside the pipeline image.
    "components": {"mlops", "serving"},
    "pipelines": {"mlops", "components"},
    "cli": {"mlops", "components", "serving", "pipelines"},
}
PROJECT = set(ALLOWED) | {"tests", "bench"}


def _is_test(path: Path) -> bool:
    return path.name.endswith("_test.py") or path.name.startswith("test_") or path.name == "conftest.py"


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) of every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in PROJECT]
    return found


def violations(package: str) -> list[str]:
    allowed = ALLOWED[package] | {package}
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        if _is_test(path):
            continue
        for line, imported in project_imports(path):
            if imported not in allowed:
                out.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_production_packages_only_import_layers_below(package):
    assert violations(package) == []


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cli.common import group\nimport serving.model\nimport numpy\n")
    assert sorted(project_imports(module)) == [(2, "cli"), (3, "serving")]


def test_no_test_helpers_in_production_packages():
    helpers = [
        p.relative_to(REPO)
        for package in ALLOWED
        for p in (REPO / package).rglob("*.py")
        if p.stem in {"testing", "fixtures", "reference_data"}
    ]
    assert helpers == []
