"""Sans-IO: a request's URL from its target and Host header (``_gateway/_address.py``)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_durable._gateway._address import BadAddressError, check_authority, request_url
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
    query = {}
    for name, value in parse_qsl(expected_query, keep_blank_values=True):
        query.setdefault(name, value)
    assert request.query == query, (target, host, url)


@given(host=st.text(max_size=30))
def test_any_accepted_host_is_exactly_the_urls_netloc(host: str) -> None:
    try:
        check_authority(host)
    except BadAddressError:
        return
    url = request_url("/p?q=1", host, scheme="http", server_address="127.0.0.1:1")
    parts = urlsplit(url)
    assert (parts.netloc, parts.path, parts.query) == (host, "/p", "q=1"), (host, url)


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
