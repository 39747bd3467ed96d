"""``--metrics-port``: the runtime's statistics in Prometheus' text format, on a port of its own.

:func:`prometheus_text` renders a :class:`~trio_durable.RuntimeStatistics`
snapshot in the text exposition format (version 0.0.4), and
:func:`serve_metrics` answers ``GET /metrics`` with it on a separate
listener (127.0.0.1 by default), so metrics never share the app's public
port or routes. Taking the snapshot wakes no object.

The format is written here by hand rather than with ``prometheus_client``:
it is a dozen lines of text with no escaping to get wrong (no label holds
user data), and the server then needs no optional dependency, no global
collector registry and no thread. ``prometheus_client``'s parser reads it
(``tests/cli/test_metrics.py``).
"""

from __future__ import annotations

import logging
import math
from typing import Final, Literal

import attrs
import h11
import trio

from .._runtime import Runtime, RuntimeStatistics

__all__ = ["CONTENT_TYPE", "METRICS", "Metric", "prometheus_text", "serve_metrics"]

logger: Final = logging.getLogger("trio_durable.cli")

#: The content type of the text format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds a scraper has to send its request.
_REQUEST_TIMEOUT: Final = 10.0


@attrs.frozen
class Metric:
    """One metric family and the statistics behind it.

    Attributes:
        name: The family's name (a counter's ends in ``_total``).
        type: ``gauge``, ``counter`` or ``summary``.
        help: The ``# HELP`` text.
        samples: ``(label value or None, statistics field)``; a summary has
            its ``_sum`` field then its ``_count`` field.
        label: The label's name when samples carry one.
    """

    name: str
    type: Literal["gauge", "counter", "summary"]
    help: str
    samples: tuple[tuple[str | None, str], ...]
    label: str | None = None


#: Every exported family; every field of RuntimeStatistics is in one (tested).
METRICS: Final = (
    Metric("trio_durable_live_objects", "gauge", "Objects in memory.", ((None, "live_objects"),)),
    Metric(
        "trio_durable_hibernated_objects",
        "gauge",
        "Objects not in memory whose hibernatable WebSockets are open.",
        ((None, "hibernated_objects"),),
    ),
    Metric(
        "trio_durable_activations_total",
        "counter",
        "Object instances built.",
        ((None, "activations"),),
    ),
    Metric(
        "trio_durable_evictions_total",
        "counter",
        "Objects evicted because they were idle (hibernation).",
        ((None, "evictions"),),
    ),
    Metric(
        "trio_durable_resets_total",
        "counter",
        "Objects reset by a failure or abort().",
        ((None, "resets"),),
    ),
    Metric(
        "trio_durable_events_total",
        "counter",
        "Events (calls, fetches, socket events, alarms) that reached a handler.",
        ((None, "events_dispatched"),),
    ),
    Metric(
        "trio_durable_hibernatable_websockets",
        "gauge",
        "Open hibernatable WebSockets.",
        ((None, "hibernatable_websockets"),),
    ),
    Metric(
        "trio_durable_websocket_connections",
        "gauge",
        "WebSocket connections served, awake (with a reader) or parked (idle, no task).",
        (("awake", "connections_awake"), ("parked", "connections_parked")),
        label="state",
    ),
    Metric(
        "trio_durable_websocket_messages_total",
        "counter",
        "Messages received and sent on hibernatable WebSockets.",
        (("received", "messages_received"), ("sent", "messages_sent")),
        label="direction",
    ),
    Metric(
        "trio_durable_auto_responses_total",
        "counter",
        "Auto-responses sent without waking an object.",
        ((None, "auto_responses"),),
    ),
    Metric(
        "trio_durable_commit_duration_seconds",
        "summary",
        "Storage commits and the seconds they took.",
        ((None, "commit_seconds"), (None, "commits")),
    ),
    Metric(
        "trio_durable_alarm_lag_seconds",
        "summary",
        "Alarms started when due, and how late they started.",
        ((None, "alarm_lag_seconds"), (None, "alarms_fired")),
    ),
    Metric(
        "trio_durable_storage_cache_bytes",
        "gauge",
        "Bytes the key-value caches of live objects hold together, and their budget.",
        (("used", "storage_cache_bytes"), ("budget", "storage_cache_budget_bytes")),
        label="kind",
    ),
    Metric(
        "trio_durable_storage_cache_evictions_total",
        "counter",
        "Cached key-value entries dropped to stay within the budget.",
        ((None, "storage_cache_evictions"),),
    ),
)


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def prometheus_text(stats: RuntimeStatistics) -> str:
    """``stats`` in Prometheus' text exposition format (0.0.4)."""
    lines: list[str] = []
    for metric in METRICS:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.type}")
        if metric.type == "summary":
            (_, total), (_, count) = metric.samples
            lines.append(f"{metric.name}_sum {_number(getattr(stats, total))}")
            lines.append(f"{metric.name}_count {_number(getattr(stats, count))}")
            continue
        for label, field in metric.samples:
            labels = "" if label is None else f'{{{metric.label}="{label}"}}'
            lines.append(f"{metric.name}{labels} {_number(getattr(stats, field))}")
    return "\n".join(lines) + "\n"


async def serve_metrics(
    runtime: Runtime,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``GET /metrics`` on ``host:port`` until cancelled; reports the bound port.

    Any other path gets 404, any other method 405; one request per
    connection.

    Raises:
        OSError: the address cannot be bound.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    task_status.started(bound)

    async def answer(stream: trio.SocketStream) -> None:
        try:
            await _answer(stream, runtime)
        except Exception:  # a scraper must never stop the server
            logger.exception("answering a metrics request failed")
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(answer, listeners)


async def _answer(stream: trio.SocketStream, runtime: Runtime) -> None:
    conn = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    with trio.move_on_after(_REQUEST_TIMEOUT):
        while request is None:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(16384)
                except trio.BrokenResourceError:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            else:
                return  # the client went away
    if request is None:
        return
    path = request.target.split(b"?", 1)[0]
    if request.method != b"GET":
        status, body = 405, b"only GET\n"
    elif path != b"/metrics":
        status, body = 404, b"metrics are at /metrics\n"
    else:
        status, body = 200, prometheus_text(runtime.statistics()).encode("utf-8")
    content_type = CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8"
    head = h11.Response(
        status_code=status,
        headers=[
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ],
    )
    data = conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    try:
        await stream.send_all(data)
    except trio.BrokenResourceError:
        return
