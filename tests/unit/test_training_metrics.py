"""The training success timestamp reaches a real Pushgateway (what MlopsNoSuccessfulTraining reads);
an unreachable gateway is a warning, never a failure."""

from __future__ import annotations

import urllib.request

from mlops.training_metrics import push_training_success
from tests.support.prometheus import Pushgateway, free_port, needs_prometheus


@needs_prometheus
def test_the_success_timestamp_is_pushed_per_model(tmp_path):
    with Pushgateway(tmp_path / "pg") as gateway:
        assert push_training_success(gateway.url, "flights", "training", finished_at=1_700_000_000)
        assert push_training_success(gateway.url, "flights", "training", finished_at=1_700_000_500)  # replaces
        text = urllib.request.urlopen(gateway.url + "/metrics", timeout=5).read().decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("mlops_training_last_success_timestamp_seconds{")]
    assert len(lines) == 1, lines
    assert 'job="mlops_training"' in lines[0] and 'model="flights"' in lines[0] and 'pipeline="training"' in lines[0]
    assert float(lines[0].rsplit(" ", 1)[1]) == 1_700_000_500


def test_no_gateway_pushes_nothing_and_a_dead_one_only_warns(capsys):
    assert push_training_success(None, "flights", "training") is False
    assert push_training_success(f"http://127.0.0.1:{free_port()}", "flights", "training") is False
    assert "push to monitoring.pushgateway_url" in capsys.readouterr().err
