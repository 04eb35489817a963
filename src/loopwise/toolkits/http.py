"""The HTTP toolkit: ``http_get`` reads public web pages and APIs as text for the model.

Every URL, and every redirect, is checked before any connection (see ``_netguard``): the
host is resolved once, every address must be public or explicitly allowed, and the
connection goes to that checked address, with the original name in ``Host``, in SNI and in
certificate verification. The standard library does the transport, in a worker thread,
under one total deadline and a byte limit.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException, HTTPResponse
from typing import Any, TypeAlias
from urllib.parse import urljoin

from ..errors import ModelRetry, UsageError
from ..tools import Tool, ToolContext, tool
from . import _netguard
from ._netguard import FetchRefused, IPAddress, Policy, Target
from ._webtext import Kind, decode, kind_of, require_html_libraries, sniff, to_text

__all__ = ["FetchRefused", "http"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "text/html, application/json;q=0.9, text/*;q=0.8, */*;q=0.1"
_CHUNK = 65_536


def http(
    *,
    allow: Sequence[str] = (),
    deny: Sequence[str] = (),
    timeout: float = 15.0,
    max_bytes: int = 2_000_000,
    max_chars: int = 20_000,
    max_redirects: int = 5,
    user_agent: str = "loopwise/0.1",
) -> list[Tool]:
    """The ``http_get`` tool: GET a URL and read its status, content type and text.

    By default only public addresses can be fetched: loopback, private (RFC 1918, CGNAT,
    ULA), link-local, cloud metadata, unspecified, multicast, broadcast and reserved
    addresses are refused, also in IPv4-mapped, NAT64 or 6to4 form and in any numeric
    spelling. Entries of ``allow`` and ``deny`` are host names (``example.com``, or
    ``*.example.com`` for every subdomain but not the domain itself), IP addresses or
    CIDR networks:

    - host names in ``allow`` make it an allow-list: only those hosts (and IP literals
      within allowed networks) may be fetched; their addresses must still be public;
    - IPs and networks in ``allow`` permit those addresses although they are not public
      (``allow=["127.0.0.1"]`` for a local service); alone they restrict nothing else.
      For an internal host give both: ``allow=["wiki.corp", "10.1.2.0/24"]``;
    - ``deny`` refuses matching hosts and addresses and wins over ``allow``.

    ``timeout`` bounds a whole call (redirects included); at most ``max_bytes`` of a body
    are read and ``max_chars`` of text shown per call (the model pages with ``offset``).
    Refusals raise :class:`FetchRefused`, which the model sees as one sentence.
    """
    require_html_libraries()
    if timeout <= 0 or max_bytes <= 0 or max_chars <= 0 or max_redirects < 0:
        raise UsageError(
            "http() needs timeout, max_bytes and max_chars above 0 and max_redirects of 0 "
            f"or more, got {timeout=}, {max_bytes=}, {max_chars=}, {max_redirects=}."
        )
    fetcher = _Fetcher(Policy.build(allow, deny), timeout, max_bytes, max_redirects, user_agent)

    async def http_get(ctx: ToolContext[Any], url: str, offset: int = 0) -> str:
        """Fetch a web page or API with HTTP GET and return its status, content type and text.

        HTML comes back as Markdown, JSON indented; binary content is refused.

        Args:
            url: The absolute http:// or https:// URL to fetch.
            offset: Character offset to start reading from, to continue a long page.
        """
        if offset < 0:
            raise ModelRetry(f"offset must be 0 or more, not {offset}.")
        try:
            async with asyncio.timeout(timeout + 1.0):
                page = await asyncio.to_thread(fetcher.fetch, url, egress_check(ctx))
        except TimeoutError:
            raise ModelRetry(f"{url} did not answer within the {timeout:g} s time limit.") from None
        text = await asyncio.to_thread(page.readable)
        return page.render(text, offset, max_chars)

    make = tool(
        idempotent=True, max_output_chars=max_chars + 1_000, effects=["read", "egress"]
    )  # its output is a third party's: untrusted
    return [make(http_get)]


EgressCheck: TypeAlias = Callable[[str], "str | None"]


def egress_check(ctx: ToolContext[Any] | None) -> EgressCheck:
    """The run's egress policy for requests a call makes on its own (redirects): every
    capability of the run with a ``check_egress(run_id, url)`` method is asked; the first
    reason it gives refuses the request."""
    scope = ctx.run if ctx is not None else None
    checks: list[Callable[[str, str], Any]] = [
        found
        for cap in (scope.capabilities if scope is not None else ())
        if callable(found := getattr(cap, "check_egress", None))
    ]
    run_id = ctx.run_id if ctx is not None else ""

    def refused(url: str) -> str | None:
        for c in checks:
            reason = c(run_id, url)
            if reason:
                return str(reason)
        return None

    return refused


@dataclass(slots=True)
class _Page:
    """A text response read within the limits, with notes on anything left out."""

    status: int
    reason: str
    media_type: str
    url: str
    body: bytes
    kind: Kind
    charset: str | None
    notes: list[str] = field(default_factory=list)

    def readable(self) -> str:
        """The body as the model should read it (CPU-bound for big HTML pages)."""
        return to_text(decode(self.body, self.charset, self.kind), self.kind, self.url)

    def render(self, text: str, offset: int, max_chars: int) -> str:
        head = f"HTTP {self.status} {self.reason}".rstrip() + f" · {self.media_type} · {self.url}"
        total = len(text)
        end = min(total, offset + max_chars)
        notes = list(self.notes)
        if offset and offset >= total:
            body = f"[offset {offset:,} is past the end: the text has {total:,} characters]"
        else:
            body = text[offset:end] or "(empty body)"
            if end < total:
                notes.insert(
                    0,
                    f"[truncated: showing characters {offset:,}-{end:,} of {total:,}; "
                    f"call http_get again with offset={end} for more]",
                )
            elif offset:
                notes.insert(0, f"[showing characters {offset:,}-{end:,} of {total:,}]")
        return "\n\n".join([head, body, *notes])


class _PinnedConnection(HTTPConnection):
    """Connects to addresses checked beforehand and never resolves the host name again.

    With ``tls`` the socket is wrapped for the original host name (SNI and certificate).
    """

    def __init__(
        self,
        target: Target,
        addresses: Sequence[IPAddress],
        deadline: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(target.host, target.port)
        self.addresses = addresses
        self.deadline = deadline
        self.tls = tls
        self.raw: socket.socket | None = None

    def connect(self) -> None:
        sock = _connect(self.addresses, self.port, self.deadline)
        if self.tls is not None:
            sock.settimeout(_remaining(self.deadline))
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = self.raw = sock

    def set_read_timeout(self, seconds: float) -> None:
        if self.raw is not None:
            self.raw.settimeout(seconds)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the time limit was reached")
    return remaining


def _connect(addresses: Sequence[IPAddress], port: int, deadline: float) -> socket.socket:
    error: OSError = OSError("no address to connect to")
    for ip in addresses:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect((str(ip), port))
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            error = exc
            continue
        return sock
    raise error


def _tls_context() -> ssl.SSLContext:
    """Certificate and host name verification against the system's trusted CAs."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass(slots=True)
class _Fetcher:
    """Blocking GET with manual redirects; runs in a worker thread."""

    policy: Policy
    timeout: float
    max_bytes: int
    max_redirects: int
    user_agent: str
    tls: ssl.SSLContext | None = field(default=None, init=False)

    def fetch(self, url: str, egress: EgressCheck | None = None) -> _Page:
        deadline = time.monotonic() + self.timeout
        via: str | None = None
        for _ in range(self.max_redirects + 1):
            refused = egress(url) if egress is not None and via is not None else None
            if refused:
                raise FetchRefused(
                    f"The redirect from {via} to {url} was refused by the run's policy: {refused}."
                )
            target, addresses = _netguard.check(url, self.policy, via=via)
            conn, resp = self._open(target, addresses, deadline)
            try:
                location = resp.getheader("Location") if resp.status in _REDIRECTS else None
                if location is None:
                    return self._page(target, conn, resp, deadline)
            finally:
                resp.close()
                conn.close()
            via, url = target.url, urljoin(target.url, location.strip())
        raise ModelRetry(
            f"Stopped after {self.max_redirects} redirects; the last one pointed to {url}."
        )

    def _open(
        self, target: Target, addresses: Sequence[IPAddress], deadline: float
    ) -> tuple[_PinnedConnection, HTTPResponse]:
        if target.scheme == "https" and self.tls is None:
            self.tls = _tls_context()
        tls = self.tls if target.scheme == "https" else None
        conn = _PinnedConnection(target, addresses, deadline, tls)
        headers = {
            "Host": target.netloc,
            "User-Agent": self.user_agent,
            "Accept": _ACCEPT,
            "Accept-Encoding": "gzip, deflate",
            "Connection": "close",
        }
        try:
            conn.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            return conn, conn.getresponse()
        except (OSError, HTTPException) as exc:
            conn.close()
            raise _network_error(exc, target.url, self.timeout) from None

    def _page(
        self,
        target: Target,
        conn: _PinnedConnection,
        resp: HTTPResponse,
        deadline: float,
    ) -> _Page:
        media = resp.headers.get_content_type() if resp.getheader("Content-Type") else None
        kind = kind_of(media)
        binary = ModelRetry(
            f"{target.url} answered HTTP {resp.status} with binary content "
            f"({media or 'no content type'}), which http_get cannot show: it reads "
            "HTML, JSON and other text only."
        )
        if kind == "binary":
            raise binary
        body, notes = self._read(conn, resp, deadline)
        body, more = _decompress(body, resp.getheader("Content-Encoding"), self.max_bytes)
        if kind == "unknown":
            kind = sniff(body)
            if kind == "binary":
                raise binary
        return _Page(
            resp.status,
            resp.reason,
            media or "(no content type)",
            target.url,
            body,
            kind,
            resp.headers.get_content_charset(),
            notes + more,
        )

    def _read(
        self, conn: _PinnedConnection, resp: HTTPResponse, deadline: float
    ) -> tuple[bytes, list[str]]:
        """At most ``max_bytes`` of the body, read before the deadline."""
        chunks: list[bytes] = []
        size = 0
        note: str | None = None
        late = f"[truncated: the {self.timeout:g} s time limit was reached after {{:,}} bytes]"
        while size <= self.max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                note = late.format(size)
                break
            conn.set_read_timeout(remaining)
            try:
                chunk = resp.read1(min(_CHUNK, self.max_bytes + 1 - size))
            except TimeoutError:
                note = late.format(size)
                break
            except (OSError, HTTPException) as exc:
                note = f"[truncated: the connection failed after {size:,} bytes: {exc}]"
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
        if len(body) > self.max_bytes:
            body = body[: self.max_bytes]
            note = f"[truncated: stopped reading at {self.max_bytes:,} bytes]"
        return body, [note] if note else []


def _decompress(body: bytes, encoding: str | None, limit: int) -> tuple[bytes, list[str]]:
    """Undo gzip/deflate content encoding, producing at most ``limit`` bytes."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body, []
    if name not in ("gzip", "x-gzip", "deflate"):
        raise ModelRetry(
            f"The response uses the content encoding {name!r}, which is not supported."
        )
    for wbits in (zlib.MAX_WBITS | 32, -zlib.MAX_WBITS):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit)
        except zlib.error:
            continue
        more = inflater.unconsumed_tail or (len(out) == limit and inflater.decompress(b"", 1))
        note = f"[truncated: stopped decompressing at {limit:,} bytes]"
        return out, [note] if more else []
    raise ModelRetry(f"The {name} response body could not be decompressed.")


def _network_error(exc: BaseException, url: str, timeout: float) -> ModelRetry:
    if isinstance(exc, TimeoutError):
        return ModelRetry(f"{url} did not answer within the {timeout:g} s time limit.")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ModelRetry(f"The TLS certificate of {url} is not valid: {exc.verify_message}.")
    if isinstance(exc, ssl.SSLError):
        return ModelRetry(f"The TLS handshake with {url} failed: {exc.reason or exc}.")
    if isinstance(exc, HTTPException):
        return ModelRetry(f"{url} sent an invalid HTTP response ({type(exc).__name__}).")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ModelRetry(f"Could not connect to {url}: {reason}.")
