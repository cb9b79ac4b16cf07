"""The README's command examples run as written (on the set-up `make demo` leaves: spans with
2013-02, the Feast online store materialized from February, a staging model), and every command
answers --help."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.support.fixtures import REPO

pytestmark = pytest.mark.integration


def readme_commands(section: str = "Command line") -> list[str]:
    """The `mlops ...` lines of the ```bash blocks in a README section."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
    return [
        line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.startswith("mlops ")
    ]


def all_commands(group, path=()):
    import click

    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


def test_every_command_answers_help():
    from cli.main import cli

    commands = list(all_commands(cli))
    assert ("run",) in commands and ("predict", "batch") in commands
    for path in [(), *commands]:
        out = CliRunner().invoke(cli, [*path, "--help"], prog_name="mlops")
        assert out.exit_code == 0 and "Usage: mlops" in out.output, (path, out.output)


@pytest.fixture(scope="module")
def demo_root(seed_root, q1_flights_model, tmp_path_factory):
    """What `make demo` leaves that the examples read: monthly spans (2013-02 among them) and the
    Feast source tables, the feature repo applied and materialized from February, and a blessed
    flights model at staging (a trained one standing in for the demo's pipeline run: the session's
    q1_flights_model, which the monitoring proof trains anyway, so no second model is trained)."""
    from tests.support.serving_models import register

    root = tmp_path_factory.mktemp("demo") / "artifacts"
    shutil.copytree(seed_root / "datasets", root / "datasets")
    env = {**os.environ, "MLOPS_ARTIFACT_ROOT": str(root)}
    for args in (["features", "apply"], ["features", "materialize", "--start", "2013-02-01T00:00:00+00:00"]):
        out = subprocess.run(
            [sys.executable, "-m", "cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
        )
        assert out.returncode == 0, out.stderr[-3000:]
    register(str(root), "flights", q1_flights_model.model_dir)
    return root


def test_demo_sets_up_what_the_examples_read():
    """demo_root above stands in for `make demo` (`mlops demo`, minutes): the demo must do the same
    set-up, span 2013-02 ingested (default sample and --full) and the online store materialized over
    the sources' whole range, a model at staging (tests/integration/test_demo_loop.py runs a batch
    prediction of flights@2013-02 with flights@staging on what the demo leaves)."""
    from cli import demo

    assert re.search(r"^exec \S*mlops demo\b", (REPO / "scripts" / "demo.sh").read_text(), re.M)
    assert all("2013-02" in plan.spans for plan in (demo.SAMPLE, demo.FULL))


def test_readme_examples_run_as_written(demo_root, tmp_path):
    commands = readme_commands()
    assert any(c.startswith("mlops predict batch") and "flights@2013-02" in c for c in commands), commands
    env = {**os.environ, "MLOPS_ARTIFACT_ROOT": str(demo_root)}
    outputs = {}
    for command in commands:
        argv = shlex.split(command.replace("/tmp/", f"{tmp_path}/"))  # outputs land in this test's dir
        out = subprocess.run(
            [sys.executable, "-m", "cli", *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
        )
        assert out.returncode == 0, (command, out.stderr[-3000:])
        assert f"artifact root: {demo_root}" in out.stderr or argv[1] == "pipeline", (command, out.stderr)
        outputs[" ".join(argv[1:3])] = out.stdout
    assert "2013-02" in outputs["data spans"]
    assert "flights" in outputs["models list"]
    from pipelines.runner import PIPELINES

    assert sorted(p.name for p in (tmp_path / "mlops-ir").iterdir()) == sorted(f"{n}.yaml" for n in PIPELINES)
    predictions = pq.read_table(tmp_path / "flights-2013-02.parquet")
    assert predictions.num_rows > 20000 and "prediction" in predictions.column_names
