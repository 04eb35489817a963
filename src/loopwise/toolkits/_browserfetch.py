"""Every request of the screenshot browser, made by loopwise under http_get's address rules.

Chromium never touches the network itself: each request it makes is intercepted and
answered from here. A URL is checked with :mod:`._netguard` (resolved once, every address
public or allowed), fetched from exactly that address, and redirects are followed here,
each hop checked again, because a browser following a redirect on its own would skip the
check. Workspace files are served from a made-up origin, through the workspace's confined
open, so ``file://`` is never used.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from urllib.parse import unquote, urljoin, urlsplit

from ..errors import ModelRetry
from . import _netguard
from ._netguard import FetchRefused, Policy
from ._paths import READ_FLAGS, Workspace
from .http import _network_error, _PinnedConnection, _tls_context

__all__ = ["WORKSPACE_ORIGIN", "Answer", "PageFetcher"]

WORKSPACE_ORIGIN = "http://workspace.loopwise.invalid"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DROP_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}
)
_CHUNK = 65_536


@dataclass(frozen=True, slots=True)
class Answer:
    """A response for Chromium: the final URL after redirects, status, headers and body."""

    url: str
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class PageFetcher:
    """Fetches for one screenshot within a deadline, a byte budget and a request count.

    ``refused`` lists the URLs the address rules stopped (the tool reports them).
    """

    policy: Policy
    workspace: Workspace | None
    deadline: float
    max_bytes: int
    max_requests: int
    user_agent: str
    spent: int = 0
    requests: int = 0
    refused: list[str] = field(default_factory=list)

    def fetch(self, url: str, headers: Mapping[str, str]) -> Answer:
        """GET ``url`` as the page asked; raises ``ModelRetry`` (refusal, limit, network)."""
        self.requests += 1
        if self.requests > self.max_requests:
            raise ModelRetry(f"the page made more than {self.max_requests} requests")
        via: str | None = None
        for _ in range(6):
            if url.startswith(WORKSPACE_ORIGIN + "/"):
                return self._workspace_file(url)
            try:
                answer = self._get(url, via, headers)
            except FetchRefused:
                self.refused.append(url)
                raise
            location = answer.headers.get("location")
            if answer.status not in _REDIRECTS or not location:
                return answer
            via, url = url, urljoin(url, location.strip())
        raise ModelRetry(f"too many redirects, the last one to {url}")

    def _get(self, url: str, via: str | None, headers: Mapping[str, str]) -> Answer:
        target, addresses = _netguard.check(url, self.policy, via=via)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ModelRetry("the screenshot's time limit was reached")
        tls = _tls_context() if target.scheme == "https" else None
        conn = _PinnedConnection(target, addresses, self.deadline, tls)
        try:
            conn.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.netloc)
            conn.putheader("User-Agent", self.user_agent)
            conn.putheader("Accept", headers.get("accept", "*/*"))
            conn.putheader("Accept-Encoding", "identity")
            conn.putheader("Connection", "close")
            conn.endheaders()
            resp = conn.getresponse()
            body = b""
            if resp.status not in _REDIRECTS:
                body = self._read(resp, conn, target.url)
            out = {k.lower(): v for k, v in resp.getheaders() if k.lower() not in _DROP_HEADERS}
            return Answer(target.url, resp.status, out, body)
        except (OSError, HTTPException) as exc:
            raise _network_error(exc, target.url, remaining) from None
        finally:
            conn.close()

    def _read(self, resp: object, conn: _PinnedConnection, url: str) -> bytes:
        chunks: list[bytes] = []
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the time limit was reached")
            conn.set_read_timeout(remaining)
            chunk = resp.read1(_CHUNK)  # type: ignore[attr-defined]
            if not chunk:
                return b"".join(chunks)
            self.spent += len(chunk)
            if self.spent > self.max_bytes:
                raise ModelRetry(
                    f"the page and its resources are over {self.max_bytes:,} bytes (at {url})"
                )
            chunks.append(chunk)

    def _workspace_file(self, url: str) -> Answer:
        if self.workspace is None:
            raise ModelRetry("workspace files cannot be shown: no workspace was given")
        path = unquote(urlsplit(url).path).lstrip("/") or "index.html"
        ws = self.workspace
        fd = ws.open_file(ws.resolve(path), READ_FLAGS)
        with open(fd, "rb", buffering=0) as f:
            data = f.read(self.max_bytes - self.spent + 1)
        self.spent += len(data)
        if self.spent > self.max_bytes:
            raise ModelRetry(f"the page and its files are over {self.max_bytes:,} bytes")
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Answer(url, 200, {"content-type": media}, data)
