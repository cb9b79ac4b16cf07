"""`mlops monitor report`: a model's recent monitoring runs and live evaluations on one page, opened
in a real browser (Debian's chromium, headless): no console errors, the plots are drawn (the SVG
paths are in the rendered DOM), a screenshot is saved as a test artifact.

The run directories hold result.json / live.json with the fields components/monitor writes (four
daily windows: drift rising on temp, CBPE estimate with its band, realised AUC from labels)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.fixtures import FLIGHTS_CONFIG, REPO

needs_chromium = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed (scripts/ensure-services.sh installs it)"
)
CONSOLE = re.compile(r"CONSOLE\(\d+\)\]? ?\"?(.*)|Uncaught .*")


def chromium(*args: str, tmp) -> subprocess.CompletedProcess:
    """Headless chromium (as root only without its sandbox), its own profile, console messages on stderr."""
    argv = [
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,900",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def console_errors(stderr: str) -> list[str]:
    """The page's console messages and uncaught errors (chromium logs them as CONSOLE(line) lines)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def write_runs(model_dir):
    for day, (temp_effect, estimate, realised) in enumerate(
        ((0.02, 0.71, 0.70), (0.05, 0.70, 0.69), (0.2, 0.66, 0.64), (0.45, 0.62, 0.60))
    ):
        start, end = f"2013-07-0{day + 1}T00:00:00+00:00", f"2013-07-0{day + 2}T00:00:00+00:00"
        run = model_dir / f"monitor-2013070{day + 2}-run{day}"
        run.mkdir(parents=True)
        feature_drift = [
            {"feature": "temp", "kind": "numeric", "effect": temp_effect, "drifted": temp_effect > 0.1},
            {"feature": "carrier", "kind": "categorical", "effect": 0.01 * (day + 1), "drifted": False},
        ]
        version = {
            "version": "1",
            "selected": True,
            "rows": 5000,
            "feature_drift": feature_drift,
            "prediction_drift": {"effect": temp_effect / 2},
            "joint_drift": {"method": "domain_classifier_auc", "score": 0.5 + temp_effect / 2},
            "estimated_performance": {
                "metrics": {
                    "auc": {"value": estimate, "low": estimate - 0.02, "high": estimate + 0.02, "reference": 0.71}
                }
            },
            "verdict": {"drifted": temp_effect > 0.1},
        }
        skipped = {"version": "2", "rows": 3, "skipped": "3 rows, fewer than monitoring.min_rows=200"}
        result = {
            "model": "flights@production",
            "window": {"start": start, "end": end},
            "versions": [version, skipped],
            "thresholds": {"numeric_wasserstein": 0.1},
            "run_id": run.name,
            "finished_at": end,
        }
        (run / "result.json").write_text(json.dumps(result))
        live = model_dir / f"live-2013070{day + 2}-run{day}"
        live.mkdir()
        (live / "live.json").write_text(
            json.dumps(
                {
                    "version": "1",
                    "window": {"start": start, "end": end},
                    "counts": {"matched": 4800, "predictions": 5000},
                    "metrics": {"auc": realised},
                    "offline": {"auc": {"live": realised, "offline": 0.71, "delta": realised - 0.71}},
                    "label_lag_seconds": {"known": 4800, "q0.5": 3600.0 * (day + 1), "q0.95": 7200.0 * (day + 1)},
                    "concept_drift": {"detected": day == 3},
                    "run_id": live.name,
                }
            )
        )
    (model_dir / ".tmp-monitor-half-written").mkdir()  # a run being staged is not read


def mlops(*args: str, root) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "cli", "monitor", "report", "--config", str(FLIGHTS_CONFIG)]
    argv += [*args, "--set", f"artifact_root={json.dumps(str(root))}"]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)


@needs_chromium
def test_monitor_report_draws_the_history_in_a_real_browser(tmp_path):
    root = tmp_path / "artifacts"
    write_runs(root / "monitoring" / "flights")
    done = mlops("--model", "flights", root=root)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    report = root / "monitoring" / "flights" / "history.html"
    assert summary == {
        "model": "flights",
        "monitoring_runs": 4,
        "live_evaluations": 4,
        "step_resources": 0,  # no pipeline ran under this root
        "report": str(report),
    }
    page = report.read_text()
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")

    dom = chromium("--dump-dom", report.as_uri(), tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert console_errors(dom.stderr) == []
    # drawn: per chart, one path per series with a point per window (feature drift: temp + carrier;
    # prediction + joint; estimated + realised + offline with the CBPE band; two lag quantiles)
    paths = re.findall(r'<path class="series" d="([^"]+)"', dom.stdout)
    assert len(paths) == 2 + 2 + 3 + 2
    assert all(p.count("L") == 3 for p in paths[:7])  # 4 windows each (offline: 4 monitoring + 4 live points)
    assert dom.stdout.count('class="band"') == 1 and "threshold 0.1" in dom.stdout

    shot = tmp_path / "monitor-report.png"
    taken = chromium(f"--screenshot={shot}", report.as_uri(), tmp=tmp_path)
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-3000:]
    assert console_errors(taken.stderr) == []
    print(f"screenshot: {shot}")


@needs_chromium
def test_the_console_check_sees_a_page_error(tmp_path):
    """The check above would see an error: chromium reports an uncaught one on stderr."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    done = chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    assert any("undefinedFunction" in line for line in console_errors(done.stderr)), done.stderr[-3000:]


def test_no_runs_is_one_line_and_no_file(tmp_path):
    root = tmp_path / "artifacts"
    done = mlops("--model", "flights", root=root)
    assert done.returncode == 1
    assert "no monitoring runs under" in done.stderr and "mlops monitor run" in done.stderr
    assert not (root / "monitoring" / "flights" / "history.html").exists()


def test_the_report_shows_each_pipeline_steps_wall_cpu_and_peak_rss_from_ml_metadata(resource_run, tmp_path):
    """A real local run (the session's resource_run: `allocate` holds 200 MiB in a worker, `burn`
    burns CPU) measured by the runner, its artifact root copied here; the report's table holds each
    step's numbers as ML Metadata has them."""
    from mlops.step_resources import human_bytes
    from mlops.validation.report import fmt

    artifact_root = tmp_path / "artifacts"
    shutil.copytree(resource_run.root, artifact_root)
    run = resource_run.run
    executions = {component: e.properties for component, e in resource_run.executions.items()}
    assert set(executions) == {"allocate", "burn"}

    write_runs(artifact_root / "monitoring" / "flights")
    done = mlops("--model", "flights", root=artifact_root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["step_resources"] == 2
    page = (artifact_root / "monitoring" / "flights" / "history.html").read_text()
    section = page.split("<h2>Pipeline step resources</h2>", 1)[1]
    rows = re.findall(r"<tr>((?:<td[^>]*>[^<]*</td>){7})</tr>", section)
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in rows]
    shown = {c[2]: c for c in cells}
    assert set(shown) == {"allocate", "burn"}
    for step, used in executions.items():
        assert shown[step][:4] == ["resources", run.name, step, "COMPLETE"]
        assert shown[step][4:] == [
            fmt(used["wall_seconds"]),
            fmt(used["cpu_seconds"]),
            human_bytes(used["peak_rss_bytes"]),
        ]
    assert shown["allocate"][6].endswith("MiB") and float(shown["allocate"][6].split()[0]) >= 200
