"""``serve(...)`` checks every option when it is called, before anything listens.

A bad option raises ``TypeError`` (wrong type) or ``ValueError`` (bad value)
naming the option, from the call itself, never later from the first
connection or WebSocket upgrade that would use it.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import trio_durable as td

from . import app

BAD_OPTIONS: list[tuple[str, object, type[Exception]]] = [
    ("park_after", -1, ValueError),
    ("park_after", math.nan, ValueError),
    ("park_after", "1", TypeError),
    ("max_message_size", 0, ValueError),
    ("max_message_size", 1.5, TypeError),
    ("max_message_size", True, TypeError),
    ("send_buffer_limit", 0, ValueError),
    ("send_buffer_limit", "1 MiB", TypeError),
    ("close_timeout", 0, ValueError),
    ("close_timeout", None, TypeError),
    ("frame_timeout", -1, ValueError),
    ("frame_timeout", math.inf, ValueError),
    ("handshake_timeout", 0, ValueError),
    ("handshake_timeout", "10", TypeError),
    ("write_timeout", -0.5, ValueError),
    ("write_timeout", None, TypeError),
    ("max_connections", 0, ValueError),
    ("max_connections", 2.0, TypeError),
    ("max_header_bytes", -1, ValueError),
    ("max_header_bytes", "16k", TypeError),
    ("max_body_bytes", 0, ValueError),
    ("max_body_bytes", None, TypeError),
    ("max_messages_per_second", 0, ValueError),
    ("max_messages_per_second", math.nan, ValueError),
    ("max_messages_per_second", "10", TypeError),
    ("allowed_origins", "https://chat.example", TypeError),
    ("allowed_origins", [42], TypeError),
    ("allowed_origins", 42, TypeError),
    ("authenticate", "not a function", TypeError),
    ("ssl_context", "not a context", TypeError),
    ("port", -1, ValueError),
    ("port", 65536, ValueError),
    ("port", "8787", TypeError),
    ("host", 127, TypeError),
]


@pytest.fixture
def listen_calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every attempt to open a listener (and open it as usual)."""
    calls: list[object] = []
    real = trio.open_tcp_listeners

    async def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return await real(*args, **kwargs)

    monkeypatch.setattr(trio, "open_tcp_listeners", spy)
    return calls


@pytest.mark.parametrize(("option", "value", "error"), BAD_OPTIONS)
async def test_bad_option_raises_at_the_call_naming_it_before_listening(
    nursery: trio.Nursery,
    runtime: td.Runtime,
    listen_calls: list[object],
    option: str,
    value: object,
    error: type[Exception],
) -> None:
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, option: value}
    with trio.fail_after(5), pytest.raises(error, match=option) as caught:
        await nursery.start(functools.partial(td.serve, runtime, app.worker, **options))
    assert type(caught.value) is error, f"{option}={value!r} raised {caught.value!r}"
    assert listen_calls == [], f"serve() listened before refusing {option}={value!r}"


async def test_worker_must_be_callable(runtime: td.Runtime, listen_calls: list[object]) -> None:
    with pytest.raises(TypeError, match="worker"):
        await td.serve(runtime, "not a worker", host="127.0.0.1", port=0)  # type: ignore[arg-type]
    assert listen_calls == [], "serve() listened before refusing the worker"


async def test_good_options_serve(start_server: Callable[..., Awaitable[int]]) -> None:
    # Boundary values that are allowed: zero park_after, ints for seconds.
    port = await start_server(park_after=0, close_timeout=1, max_messages_per_second=0.5)
    answer = await _get(port)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


async def _get(port: int) -> bytes:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            received = b""
            while chunk := await stream.receive_some():
                received += chunk
            return received


def test_the_options_record_has_the_option_names_and_defaults_of_serve() -> None:
    import attrs

    from trio_durable._gateway._options import ServeOptions

    parameters = inspect.signature(td.serve).parameters
    options = {
        name: parameter.default
        for name, parameter in parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("task_status", "sock")
    }
    fields = {field.name: field.default for field in attrs.fields(ServeOptions)}
    assert set(fields) == set(options), "the record's fields are serve()'s options"
    for name, default in options.items():
        if default is inspect.Parameter.empty:
            assert fields[name] is attrs.NOTHING, f"{name} is required in both"
        else:
            assert fields[name] == default, f"{name}: serve() {default!r}, record {fields[name]!r}"


def test_the_options_record_is_frozen() -> None:
    import attrs

    from trio_durable._gateway._options import ServeOptions

    options = ServeOptions(host="127.0.0.1", port=0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.port = 1  # type: ignore[misc]
