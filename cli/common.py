"""What every `mlops` command shares: the --config option, the environment a command runs in, the
one place errors become messages and exit codes, and output helpers.

Command modules (cli/data.py, cli/models.py, ...) import this module; cli/main.py assembles them.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from mlops import envs
from mlops.config import DEFAULT_CONFIG_PATH
from mlops.errors import MlopsError, status_of

# envs.run_in re-executes this command line in the other environment as `python -m cli ...`.
ENTRY_MODULE = "cli"

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    help="Platform config YAML (env MLOPS_CONFIG).",
)


class PlatformError(click.ClickException):
    """An MlopsError on its way out of a command: its message, the exit code of its kind."""

    def __init__(self, error: MlopsError):
        super().__init__(error.message)
        self.exit_code = status_of(error).exit_code


class Group(click.Group):
    """A click group whose commands turn any MlopsError into `Error: <message>` and the exit code
    of its kind (mlops.errors), without a traceback. The one place errors meet the terminal."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlopsError as e:
            raise PlatformError(e) from None

    def group(self, *args, **kwargs):
        kwargs.setdefault("cls", Group)
        return super().group(*args, **kwargs)


def group(**kwargs):
    """A command group (the top one or a stage's) with the platform's error mapping."""
    return click.group(cls=Group, **kwargs)


def console():
    from rich.console import Console

    return Console(stderr=True)


def runs_in(env: str):
    """Marks a command as needing `env`; it re-executes there before running."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            envs.run_in(env, sys.argv[1:], entry_module=ENTRY_MODULE)
            return fn(*args, **kwargs)

        return inner

    return wrap


verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show every step's full log as it runs (it is always kept in the run's logs/ dir).",
)


def load(config_path: str, overrides: dict | None = None):
    """The config of a command. Every command states the artifact root it uses (one line, stderr),
    because a copied config file silently moves it: relative paths are relative to the file."""
    from mlops.config import load_config

    cfg = load_config(config_path, overrides=overrides)
    click.echo(f"artifact root: {cfg.artifact_root} (from {_artifact_root_source(config_path, overrides)})", err=True)
    return cfg


def _artifact_root_source(config_path: str, overrides: dict | None) -> str:
    """Where the artifact root came from: an override, an environment variable the file names, or
    the file itself."""
    import os
    import re

    import yaml

    if "artifact_root" in (overrides or {}):
        return "--set artifact_root"
    shown = os.path.relpath(config_path) if not os.path.relpath(config_path).startswith("..") else config_path
    try:
        raw = yaml.safe_load(open(config_path).read()).get("artifact_root")
    except (OSError, yaml.YAMLError, AttributeError):
        return shown
    used = [v for v in re.findall(r"\$\{(\w+)", str(raw)) if os.environ.get(v)]
    return f"${used[0]} via {shown}" if used else f"{shown}: artifact_root: {raw}"


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def key_values(items, option: str, parse_json: bool) -> dict:
    """`KEY=VALUE` options (--set, --param, --entity) as a dict; values parsed as JSON when asked
    and possible, else kept as strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        if parse_json:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


def load_with_overrides(config_path: str, overrides, option: str = "--set"):
    """The config with `--set KEY=JSON` overrides; a bad override names the option, not the file."""
    from mlops.config import ConfigError

    values = key_values(overrides, option, True)
    try:
        return load(config_path, values)
    except ConfigError as e:
        if e.override is not None:
            raise click.BadParameter(str(e), param_hint=option) from None
        raise
