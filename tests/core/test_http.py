"""Request / Response / Headers values."""

from __future__ import annotations

import pytest

import trio_durable as td


def test_request_parts() -> None:
    request = td.Request(method="get", url="http://host:8787/rooms/a?name=ann&x=1&x=2")
    assert request.method == "GET"
    assert request.path == "/rooms/a"
    assert request.query == {"name": "ann", "x": "1"}, "first value wins for repeated names"
    assert td.Request(url="http://host").path == "/"


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    headers = td.Headers([("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")])
    assert headers["content-type"] == "text/plain"
    assert headers["X-A"] == "1, 2"
    assert headers.get_all("x-a") == ["1", "2"]
    assert "CONTENT-TYPE" in headers and "nope" not in headers
    assert len(headers) == 2
    with pytest.raises(KeyError):
        headers["nope"]
    with pytest.raises(TypeError, match="must be str"):
        td.Headers({"a": 1})  # type: ignore[dict-item]


def test_request_body_text_and_json() -> None:
    request = td.Request(method="POST", body='{"a": [1, "é"]}')
    assert request.body == '{"a": [1, "é"]}'.encode()
    assert request.text() == '{"a": [1, "é"]}'
    assert request.json() == {"a": [1, "é"]}
    with pytest.raises(ValueError):  # noqa: PT011
        td.Request(body=b"{").json()
    with pytest.raises(TypeError, match="body must be bytes or str"):
        td.Request(body=12)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "method", "expected"),
    [
        ({"Upgrade": "websocket", "Connection": "Upgrade"}, "GET", True),
        ({"upgrade": "WebSocket", "connection": "keep-alive, upgrade"}, "GET", True),
        ({"Upgrade": "websocket", "Connection": "Upgrade"}, "POST", False),
        ({"Upgrade": "h2c", "Connection": "Upgrade"}, "GET", False),
        ({}, "GET", False),
    ],
)
def test_is_websocket_upgrade(headers: dict[str, str], method: str, expected: bool) -> None:
    assert td.Request(method=method, headers=headers).is_websocket_upgrade is expected


def test_response_constructors() -> None:
    text = td.Response.text("hé", status=201)
    assert (text.status, text.body, text.headers["content-type"]) == (
        201,
        "hé".encode(),
        "text/plain; charset=utf-8",
    )
    data = td.Response.json({"a": 1})
    assert (data.body, data.headers["content-type"]) == (b'{"a":1}', "application/json")
    assert td.Response().status == 200


@pytest.mark.parametrize("status", [99, 600, "200"])
def test_bad_status_is_refused(status: object) -> None:
    with pytest.raises(ValueError, match="status must be an int from 100 to 599"):
        td.Response(status=status)  # type: ignore[arg-type]
