"""Writes the PrometheusRule objects of manifests/base/monitoring.yaml from the plain rules file
manifests/monitoring/rules.yml (the one source): one PrometheusRule per rule group, named after it.
The other objects of monitoring.yaml (the PodMonitor) are kept as they are.

    python scripts/render_prometheus_rules.py          # rewrite monitoring.yaml
    python scripts/render_prometheus_rules.py --check  # exit 1 if it is not what the rules file gives
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "manifests" / "monitoring" / "rules.yml"
MANIFEST = REPO / "manifests" / "base" / "monitoring.yaml"
HEADER = "# Generated from manifests/monitoring/rules.yml by scripts/render_prometheus_rules.py: edit that file.\n"


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, text: str):
    # multi-line PromQL stays readable as a literal block
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


def prometheus_rules(rules_path: Path = RULES) -> list[dict]:
    groups = yaml.safe_load(rules_path.read_text())["groups"]
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": group["name"]},
            "spec": {"groups": [group]},
        }
        for group in groups
    ]


def render(manifest_text: str, rules_path: Path = RULES) -> str:
    kept = [d for d in manifest_text.split("\n---\n") if d.strip() and "\nkind: PrometheusRule\n" not in f"\n{d}\n"]
    generated = [
        HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120) for doc in prometheus_rules(rules_path)
    ]
    return "\n---\n".join(d.rstrip("\n") for d in kept + generated) + "\n"


def main(argv: list[str]) -> int:
    text = MANIFEST.read_text()
    wanted = render(text)
    if "--check" in argv:
        if text != wanted:
            print(
                f"{MANIFEST.relative_to(REPO)} differs from {RULES.relative_to(REPO)}: run {__file__}", file=sys.stderr
            )
            return 1
        return 0
    MANIFEST.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
