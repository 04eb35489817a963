"""DNS rebinding and cross-site requests: which Host names the server answers to, and which
browser requests may change anything.

A page on ``attacker.example`` whose name the attacker re-points at 127.0.0.1 talks to a
loopback server "same-origin", but its requests carry ``Host: attacker.example``. So every
request's ``Host`` (and any ``X-Forwarded-Host`` or ``Forwarded: host=`` a proxy added) must
name this server: ``localhost``, a loopback address, the bound address (any IP address
when bound to all interfaces) or a name given with ``--allowed-host``; other names get 421,
malformed or missing ones 400. The request target must be a path (an absolute URL target
would name another host).

Without required keys (``--no-auth``) a browser's ambient access is the only credential
needed, so requests that change something (POST, PUT, PATCH, DELETE) are refused when
``Sec-Fetch-Site`` or ``Origin`` says they come from another site (403), and POST, PUT and
PATCH must say ``Content-Type: application/json``, which no cross-site form or simple
request can send without a CORS preflight this server never grants (415).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import UsageError
from .errors import error_response

__all__ = ["AllowedHosts", "HostGuard", "host_name"]

_NAME = re.compile(r"^([a-z0-9_-]+(?:\.[a-z0-9_-]+)*)\.?(?::(\d{1,5}))?$")
_BRACKETED = re.compile(r"^\[([0-9a-f:.]+)\](?::(\d{1,5}))?$")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SAME = frozenset({"same-origin", "none"})


def host_name(value: str) -> tuple[str, int | None] | None:
    """The host name (lower case, no trailing dot) and port of a Host value; None when it
    is not a valid ``host[:port]`` (userinfo, paths, spaces, zone ids, bad ports)."""
    text = value.strip().lower()
    found = _BRACKETED.match(text)
    if found:
        try:
            address = ipaddress.IPv6Address(found[1])
        except ValueError:
            return None
        host = str(address)
    else:
        found = _NAME.match(text)
        if not found:
            return None
        host = found[1]
    port = found[2]
    if port is not None and not 0 < int(port) <= 65535:
        return None
    return host, None if port is None else int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class AllowedHosts:
    """The names a server bound to ``bound`` answers to (see the module docstring)."""

    def __init__(self, bound: str | None, names: Iterable[str] = ()):
        self.any = False
        self.names = {"localhost"}
        self.addresses: set[str] = set()
        self.every_address = bound in (None, "0.0.0.0", "::", "[::]", "")
        for name in [*names, *([bound] if bound else [])]:
            if name.strip() == "*":
                self.any = True
                continue
            parsed = host_name(name if not _is_bare_ipv6(name) else f"[{name}]")
            if parsed is None:
                raise UsageError(f"Allowed host {name!r} is not a host name or address.")
            ip = _ip(parsed[0])
            (self.addresses if ip is not None else self.names).add(
                str(ip) if ip is not None else parsed[0]
            )

    def allows(self, host: str) -> bool:
        if self.any or host in self.names:
            return True
        ip = _ip(host)
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback or self.every_address or str(ip) in self.addresses


def _is_bare_ipv6(text: str) -> bool:
    return ":" in text and not text.startswith("[") and _ip(text) is not None


class HostGuard:
    """ASGI middleware: the Host checks always; the cross-site checks when ``keyless``."""

    def __init__(self, app: ASGIApp, *, allowed: AllowedHosts, keyless: bool):
        self.app = app
        self.allowed = allowed
        self.keyless = keyless

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        await error_response(status, code, message, {"Connection": "close"})(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = Headers(scope=scope)
        raw = scope.get("raw_path") or scope["path"].encode()
        if not raw.startswith(b"/"):
            return 400, "bad_request", "The request target must be a path, not a URL or '*'."
        hosts = headers.getlist("host")
        if len(hosts) != 1:
            return 400, "bad_request", "The request needs exactly one Host header."
        parsed = host_name(hosts[0])
        if parsed is None:
            return 400, "bad_request", "The Host header is not a valid host name or address."
        for value in [parsed[0], *self._forwarded(headers)]:
            if value is None:
                return 400, "bad_request", "A forwarded host is not a valid host name."
            if not self.allowed.allows(value):
                return (
                    421,
                    "misdirected_request",
                    f"This server does not answer to the host name {value[:100]!r}; if that "
                    "name should reach it, start it with --allowed-host.",
                )
        if self.keyless and scope.get("method", "GET") not in _SAFE_METHODS:
            return _cross_site(headers, parsed, scope)
        return None

    @staticmethod
    def _forwarded(headers: Headers) -> list[str | None]:
        """The hosts named by X-Forwarded-Host and Forwarded (host=...) headers."""
        values = [v for h in headers.getlist("x-forwarded-host") for v in h.split(",")]
        for header in headers.getlist("forwarded"):
            for element in header.split(","):
                for pair in element.split(";"):
                    key, _, value = pair.strip().partition("=")
                    if key.strip().lower() == "host":
                        values.append(value.strip().strip('"'))
        names = [host_name(v) for v in values]
        return [None if n is None else n[0] for n in names]


def _cross_site(
    headers: Headers, host: tuple[str, int | None], scope: Scope
) -> tuple[int, str, str] | None:
    """Why a state-changing request to a keyless server looks cross-site, or None."""
    refused = (403, "forbidden", "Requests from other sites cannot change anything here.")
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in _SAME:
        return refused
    origin = headers.get("origin")
    if origin is not None and not _same_origin(origin, host, scope):
        return refused
    if scope["method"] in _BODY_METHODS:
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return (
                415,
                "unsupported_media_type",
                f"{scope['method']} requests here must send 'Content-Type: application/json'.",
            )
    return None


def _same_origin(origin: str, host: tuple[str, int | None], scope: Scope) -> bool:
    """Whether ``Origin`` is this server as the request's Host names it."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    scheme = scope.get("scheme", "http")
    if parts.scheme != scheme or not parts.hostname:
        return False  # "null" (sandboxed frames, files), another scheme, anything else
    default = 443 if scheme == "https" else 80
    mine = host[1] or default
    theirs = host_name(parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]")
    return theirs is not None and theirs[0] == host[0] and (port or default) == mine
