"""``--metrics-port``: the runtime's statistics in Prometheus' text format."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import attrs
import pytest
from websockets.sync.client import connect

from trio_durable import RuntimeStatistics
from trio_durable._cli._metrics import CONTENT_TYPE, METRICS, prometheus_text

from .helpers import ROOT, Command, one_line_error, run

parser = pytest.importorskip("prometheus_client.parser")

STATS = RuntimeStatistics(
    live_objects=2,
    activations=5,
    evictions=3,
    resets=1,
    events_dispatched=40,
    hibernated_objects=1,
    hibernatable_websockets=7,
    connections_awake=2,
    connections_parked=5,
    messages_received=11,
    messages_sent=13,
    auto_responses=4,
    commits=6,
    commit_seconds=0.25,
    alarms_fired=2,
    alarm_lag_seconds=0.5,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_statistic_is_exported() -> None:
    exported = {field for metric in METRICS for _, field in metric.samples}
    assert exported == {f.name for f in attrs.fields(RuntimeStatistics)}, (
        "each field of RuntimeStatistics is in exactly the metrics"
    )


def test_the_text_parses_with_the_values_and_types() -> None:
    text = prometheus_text(STATS)
    families = {f.name: f.type for f in parser.text_string_to_metric_families(text)}
    assert families["trio_durable_activations"] == "counter", families
    assert families["trio_durable_live_objects"] == "gauge", families
    assert families["trio_durable_commit_duration_seconds"] == "summary", families
    values = samples(text)
    assert values[("trio_durable_activations_total", ())] == 5
    assert values[("trio_durable_websocket_connections", (("state", "parked"),))] == 5
    assert values[("trio_durable_websocket_messages_total", (("direction", "sent"),))] == 13
    assert values[("trio_durable_commit_duration_seconds_sum", ())] == 0.25
    assert values[("trio_durable_commit_duration_seconds_count", ())] == 6
    assert values[("trio_durable_alarm_lag_seconds_sum", ())] == 0.5


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read().decode()


@pytest.mark.slow
def test_the_metrics_port_serves_counts_that_move(tmp_path: Path) -> None:
    server = Command(
        "serve",
        "examples.chat:app",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        cwd=ROOT,
    )
    try:
        base = server.wait_for(r"serving examples\.chat:app on (http://\S+) ").group(1)
        metrics = server.wait_for(r"metrics on (http://127\.0\.0\.1:\d+/metrics)$").group(1)
        status, content_type, text = get(metrics)
        assert (status, content_type) == (200, CONTENT_TYPE), (status, content_type)
        before = samples(text)
        room = base.replace("http://", "ws://") + "/api/room/lobby/websocket"
        with connect(room, proxy=None, open_timeout=30) as client:
            client.send('{"name": "ada"}')
            assert client.recv(30) == '{"joined": "ada"}', "the room answered"
            after = samples(get(metrics)[2])
        received = ("trio_durable_websocket_messages_total", (("direction", "received"),))
        assert after[received] == before[received] + 1, "the message was counted"
        assert after[("trio_durable_activations_total", ())] >= 1, "the room was activated"
        assert get(metrics.replace("/metrics", "/other"))[0] == 404
        assert server.stop(signal.SIGTERM) == 0, server.lines
    finally:
        server.kill()


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "serve",
            "examples.chat:app",
            "--port",
            "0",
            "--metrics-port",
            str(port),
            "--data-dir",
            str(tmp_path),
        )
    line = one_line_error(result)
    assert line == f"trio-durable: error: cannot listen on 127.0.0.1:{port}: the port is in use", (
        line
    )


def test_metrics_with_workers_are_refused_for_now(tmp_path: Path) -> None:
    line = one_line_error(
        run(
            "serve",
            "examples.chat:app",
            "--workers",
            "2",
            "--metrics-port",
            "9100",
            "--data-dir",
            str(tmp_path),
        )
    )
    assert "metrics_port is not available with workers > 1" in line, line
