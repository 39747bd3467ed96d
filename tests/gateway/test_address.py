"""Sans-IO: a request's URL from its target and Host header (``_gateway/_address.py``)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_durable._gateway._address import BadAddressError, check_authority, request_url
from trio_durable._gateway._http1 import HttpError, build_request
from trio_durable._http import Request

# What h11 lets through in a request target: visible ASCII.
target_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#")
hosts = st.sampled_from(
    ["example.test", "example.test:8080", "127.0.0.1", "[::1]:1", "[v1.x]", "a%20b", "x:"]
)


@given(path=st.text(target_chars, max_size=40), host=hosts)
def test_path_and_query_come_from_the_target_alone(path: str, host: str) -> None:
    target = "/" + path
    url = request_url(target, host, scheme="http", server_address="127.0.0.1:1")
    request = Request(url=url)
    expected_path, _, expected_query = target.partition("?")
    assert request.path == expected_path, (target, host, url)
    query: dict[str, str] = {}
    for name, value in parse_qsl(expected_query, keep_blank_values=True):
        query.setdefault(name, value)
    assert request.query == query, (target, host, url)


# Host strings made of the pieces the grammar is built from, so that the
# unusual corners (IP literals, IPvFuture in either case, ports, escapes)
# come up often, plus arbitrary text.
_host_pieces = st.sampled_from(
    ["[", "]", ":", "v", "V", "1", "9", "f", "F", ".", "x", "%", "%20", "::", "@", "/", "?",
     "#", "[::1]", "[v9.x]", "[V9.x]", "[V", "1.2.3.4", "ffff", "%eth0", "-", "~", "!", "*"]
)  # fmt: skip
_ports = st.sampled_from(["", ":", ":80", ":65535"])
_ip_futures = st.builds(
    "[{}{}.{}]{}".format,
    st.sampled_from("vV"),
    st.text("0123456789abcdefABCDEF", min_size=1, max_size=3),
    st.text("abcXYZ019-._~!$&'()*+,;=:", min_size=1, max_size=6),
    _ports,
)
_ipv6 = st.builds("[{}]{}".format, st.ip_addresses(v=6).map(str), _ports)
host_texts = st.one_of(
    _ip_futures,
    _ipv6,
    st.lists(_host_pieces, min_size=1, max_size=8).map("".join),
    st.text(max_size=30),
)


@given(host=host_texts)
def test_any_accepted_host_is_exactly_the_urls_netloc(host: str) -> None:
    try:
        accepted = check_authority(host)
    except BadAddressError:
        return
    assert accepted.lower() == host.lower(), "only the case of an IPvFuture's v may change"
    url = request_url("/p?q=1", host, scheme="http", server_address="127.0.0.1:1")
    parts = urlsplit(url)  # an app may parse the URL itself: it must not raise either
    assert (parts.netloc, parts.path, parts.query) == (accepted, "/p", "q=1"), (host, url)


@given(host=host_texts, target=st.text(target_chars, max_size=20).map(lambda t: "/" + t))
def test_whatever_host_passes_the_check_path_and_query_never_fail(host: str, target: str) -> None:
    try:
        header = host.encode("latin-1")
        event = h11.Request(method="GET", target=target, headers=[(b"Host", header)])
    except (UnicodeEncodeError, h11.LocalProtocolError):
        return  # h11 would refuse this head on the wire already
    refusal: HttpError | None = None
    try:
        request = build_request(event, b"", peer=("1.2.3.4", 5), scheme="http", server_address="x")
    except HttpError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.status == 400, refusal
        return
    expected_path, _, expected_query = target.partition("?")
    assert request.path == expected_path, (host, target, request.url)
    assert request.query == dict(reversed(parse_qsl(expected_query, keep_blank_values=True))), (
        host,
        target,
        request.url,
    )


def test_an_upper_case_ipvfuture_host_is_served_with_its_path() -> None:
    url = request_url("/a/b?x=1", "[V9.x]:80", scheme="http", server_address="127.0.0.1:1")
    assert url == "http://[v9.x]:80/a/b?x=1", url
    request = Request(url=url)
    assert (request.path, request.query) == ("/a/b", {"x": "1"}), request


url_texts = st.text(st.characters(codec="ascii"), max_size=30) | st.lists(
    st.sampled_from(["http", "://", "//", ":", "[", "]", "/", "?", "#", "a", "=", "&", " ", "\t"]),
    max_size=10,
).map("".join)


@given(url=url_texts)
def test_path_and_query_split_a_url_as_urlsplit_does_and_never_raise(url: str) -> None:
    request = Request(url=url)
    path, query = request.path, request.query  # never raises, whatever the URL
    try:
        parts = urlsplit(url)
    except ValueError:
        return  # urlsplit refuses the authority; ours does not look at it
    assert path == (parts.path or "/"), url
    assert query == dict(reversed(parse_qsl(parts.query, keep_blank_values=True))), url


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("", "empty"),
        ("a/b", "not a host[:port]"),
        ("a@b", "not a host[:port]"),
        ("a:b", "invalid port"),
        ("a:70000", "invalid port"),
        ("[::1", "not a valid IP literal"),
        ("[::1]x", "something after"),
        ("[fe80::1%eth0]", "not a valid IP literal"),
    ],
)
def test_bad_host_error_says_why(host: str, reason: str) -> None:
    with pytest.raises(BadAddressError, match=re.escape(reason)):
        check_authority(host)


def test_absolute_form_error_names_the_target() -> None:
    with pytest.raises(BadAddressError, match="request target's authority"):
        request_url("http://a@b/p", "x", scheme="http", server_address="127.0.0.1:1")


def test_without_host_the_servers_address_is_the_authority() -> None:
    url = request_url("/p", None, scheme="https", server_address="[::1]:8443")
    assert url == "https://[::1]:8443/p", url
