"""Where a request is addressed: its URL from the request target and Host (sans-IO).

The path and query of :attr:`Request.url <trio_durable.Request.url>` come
from the request target alone; the Host header (or an absolute-form
target's authority) only names the host, and is checked to be exactly a
``host[:port]`` first. Otherwise ``Host: 127.0.0.1/whoami?x=1#`` would turn
``http://{host}{target}`` into a different path and query than the client
asked for, past any path rule of a front proxy.

The rules (RFC 9112 section 3.2, RFC 3986 section 3.2.2):

* The target is either origin-form (``/path?query``) or absolute-form
  (``http://authority/path?query``); anything else (``*``, ``host:port``,
  a relative path, another scheme) is refused. A fragment (``#``) is never
  part of a request target.
* A Host header, when present, must be a reg-name, an IPv4 address or a
  bracketed IP literal (IPv6 without a zone, or IPvFuture), optionally with
  ``:port`` (digits, at most 65535). It may not be empty. HTTP/1.1 requires
  it (h11 refuses a request without it, or with two). An IPvFuture's
  leading ``V`` is written ``v`` in the URL (RFC 3986 section 6.2.2.1: it
  is case-insensitive), the only spelling ``urllib.parse`` accepts, so an
  app that parses ``request.url`` itself never fails on an accepted Host.
* An absolute-form target's authority wins over the Host header (which must
  still be valid); it may carry no user info.
* The URL's scheme is the connection's (``https`` over TLS), whatever an
  absolute-form target says, so a client cannot make a plain-text request
  look as if it came over TLS.
* With no Host header (HTTP/1.0 only), the server's own address is used.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = ["BadAddressError", "check_authority", "request_url"]

# RFC 3986: reg-name = *( unreserved / pct-encoded / sub-delims ); ours is non-empty.
_REG_NAME: Final = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
# RFC 3986: IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ).
_IPV_FUTURE: Final = re.compile(r"[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+")
_PORT: Final = re.compile(r"[0-9]*")
_ABSOLUTE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.DOTALL)


class BadAddressError(ValueError):
    """The request target or Host header is not acceptable; the client gets 400."""


def check_authority(authority: str, *, what: str = "Host header") -> str:
    """Return ``authority`` if it is exactly ``host[:port]``, else raise.

    An IPvFuture literal comes back with a lower-case ``v`` (``[V9.x]``
    gives ``[v9.x]``); anything else comes back unchanged.

    Raises:
        BadAddressError: It is empty, has anything beyond a host and a port
            (a path, a query, user info, spaces), or a port over 65535.
    """
    if not authority:
        raise BadAddressError(f"the {what} is empty")
    if authority.startswith("["):
        literal, bracket, rest = authority[1:].partition("]")
        if not bracket or not _is_ip_literal(literal):
            raise BadAddressError(f"the {what} {authority!r} is not a valid IP literal")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            raise BadAddressError(f"the {what} {authority!r} has something after its IP literal")
        if literal.startswith("V"):
            authority = "[v" + authority[2:]
    else:
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
        if _REG_NAME.fullmatch(host) is None:
            raise BadAddressError(f"the {what} {authority!r} is not a host[:port]")
    if port is not None and (_PORT.fullmatch(port) is None or (port and int(port) > 65535)):
        raise BadAddressError(f"the {what} {authority!r} has an invalid port")
    return authority


def _is_ip_literal(text: str) -> bool:
    if _IPV_FUTURE.fullmatch(text) is not None:
        return True
    if "%" in text:  # a zone ID (RFC 6874) is not part of an RFC 3986 IP literal
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def request_url(target: str, host: str | None, *, scheme: str, server_address: str) -> str:
    """The absolute URL of a request, built so that only ``target`` gives its path and query.

    Args:
        target: The request target, as received (ASCII).
        host: The Host header's value, or ``None`` when there is none.
        scheme: ``"http"`` or ``"https"``: the connection's.
        server_address: ``host:port`` of the listening socket, used when
            there is no Host header.

    Raises:
        BadAddressError: The target or the Host header is not acceptable
            (see the module docstring); the message says which and why.
    """
    if "#" in target:
        raise BadAddressError(f"the request target {target!r} has a fragment ('#')")
    if host is not None:
        host = check_authority(host)
    if target.startswith("/"):
        authority = host if host is not None else server_address
        return f"{scheme}://{authority}{target}"
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is None:
        raise BadAddressError(
            f"the request target {target!r} is neither a path (/...) nor an absolute http URL"
        )
    target_scheme, authority, rest = absolute.groups()
    if target_scheme.lower() not in ("http", "https"):
        raise BadAddressError(f"the request target {target!r} is not an http or https URL")
    authority = check_authority(authority, what="request target's authority")
    if not rest.startswith("/"):
        rest = "/" + rest  # "http://h?x=1" asks for the root
    return f"{scheme}://{authority}{rest}"
