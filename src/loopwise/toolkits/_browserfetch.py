"""Every request of the screenshot browser, answered by loopwise, never by Chromium itself.

A remote page's requests are fetched under ``http_get``'s address rules (:mod:`._netguard`:
resolved once, every address public or allowed, fetched from exactly that address). A
subresource's redirect goes back to Chromium, whose next request comes here again and is
checked again, so every response keeps the origin it really has. A workspace page is
served from its own random origin, only files from the page's directory, and nothing else.
Playwright adds ``Access-Control-Allow-Origin`` to every intercepted cross-origin answer
that lacks one; :func:`browser_headers` sets a value no origin matches, so CORS holds.
"""

from __future__ import annotations

import html
import mimetypes
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from urllib.parse import quote, unquote, urljoin, urlsplit

from ..errors import ModelRetry
from . import _netguard
from ._netguard import FetchRefused, Policy
from ._paths import READ_FLAGS, Target, Workspace, shown
from .http import _network_error, _PinnedConnection, _tls_context

__all__ = [
    "REDIRECTS",
    "Answer",
    "PageFetcher",
    "WorkspaceFiles",
    "browser_headers",
    "hop_page",
    "new_workspace_origin",
    "site",
]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DROP_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}
)
_CHUNK = 65_536
_URL_SAFE = ":/?#[]@!$&()*+,;=%~-._"
NO_ORIGIN = "loopwise-no-cross-origin-reads"
"""An ``Access-Control-Allow-Origin`` that equals no origin (not even ``null``)."""
_WORKSPACE_CSP = (
    "default-src 'self' data: blob:; style-src 'self' 'unsafe-inline' data:; "
    "script-src 'none'; connect-src 'none'; worker-src 'none'; manifest-src 'none'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
)


def site(url: str) -> tuple[str, int | None] | None:
    """What a response may not leave: the host and any non-default port (None: not web)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None
    if port == {"http": 80, "https": 443}[scheme]:
        port = None
    return (parts.hostname or "").lower(), port


def new_workspace_origin() -> str:
    """A fresh origin for one screenshot's workspace files, unknown to any other page."""
    return f"http://{secrets.token_hex(12)}.workspace.loopwise.invalid"


def hop_page(url: str, location: str) -> Answer:
    """A navigation redirected to another site: a page that moves on there, a new request."""
    target = html.escape(quote(location, safe=_URL_SAFE), quote=True)
    body = f'<!doctype html><meta http-equiv="refresh" content="0; url={target}">'
    return Answer(url, 200, {"content-type": "text/html; charset=utf-8"}, body.encode())


def browser_headers(
    headers: Mapping[str, str], *, workspace: bool, scripts: bool
) -> dict[str, str]:
    """Headers for Chromium: no cross-origin reads; a workspace file also gets a strict CSP."""
    out = {k.lower(): v for k, v in headers.items()}
    out.setdefault("access-control-allow-origin", NO_ORIGIN)
    if workspace:
        out["access-control-allow-origin"] = NO_ORIGIN
        out["cross-origin-resource-policy"] = "same-origin"
        out["x-content-type-options"] = "nosniff"
        out["referrer-policy"] = "no-referrer"
        out["cache-control"] = "no-store"
        if not scripts:
            out["content-security-policy"] = _WORKSPACE_CSP
    return out


@dataclass(frozen=True, slots=True)
class Answer:
    """A response for Chromium: the final URL after redirects, status, headers and body."""

    url: str
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class PageFetcher:
    """Fetches a remote page's requests within a deadline, a byte budget and a request count.

    It knows no workspace: nothing a remote page asks for can be a workspace file.
    ``refused`` lists the URLs the address rules stopped (the tool reports them).
    """

    policy: Policy
    deadline: float
    max_bytes: int
    max_requests: int
    user_agent: str
    spent: int = 0
    requests: int = 0
    refused: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    """Subresource redirects to another site, not followed (the tool reports them)."""

    def fetch(self, url: str, headers: Mapping[str, str], *, same_site: bool = False) -> Answer:
        """GET ``url`` as the page asked; raises ``ModelRetry`` (refusal, limit, network).

        With ``same_site`` a redirect to another site is not followed but returned (its
        ``location`` made absolute): a response is never served at another site's URL.
        """
        self.requests += 1
        if self.requests > self.max_requests:
            raise ModelRetry(f"the page made more than {self.max_requests} requests")
        via: str | None = None
        for _ in range(6):
            try:
                answer = self._get(url, via, headers)
            except FetchRefused:
                self.refused.append(url)
                raise
            location = answer.headers.get("location")
            if answer.status not in REDIRECTS or not location:
                return answer
            via, url = url, urljoin(url, location.strip())
            if same_site and site(url) != site(via):
                return Answer(via, answer.status, {**answer.headers, "location": url}, b"")
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
            if resp.status not in REDIRECTS:
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


@dataclass(slots=True)
class WorkspaceFiles:
    """A workspace page's only source: files below the page's directory, at its own origin.

    Hidden names (``.env``, ``.git/``) and anything a symbolic link leads out to are refused.
    """

    workspace: Workspace
    origin: str
    max_bytes: int
    max_requests: int
    base: tuple[str, ...] = ()
    spent: int = 0
    requests: int = 0
    blocked: list[str] = field(default_factory=list)

    def page(self, path: str) -> tuple[Target, str]:
        """Check the page the model named; its directory becomes the only one served."""
        target = self.checked(path)
        self.base = target.parent
        return target, f"{self.origin}/{quote(target.rel)}"

    def checked(self, path: str) -> Target:
        """Resolve ``path`` in the workspace; refuse hidden names and the outside."""
        target = self.workspace.resolve(path)
        asked = [p for p in path.split("/") if p not in ("", ".")]
        if any(p.startswith(".") and p != ".." for p in (*asked, *target.parts)):
            raise ModelRetry(
                f"{shown(path)} is or is inside a hidden file or folder; screenshots show "
                "only files whose names do not start with a dot."
            )
        if target.parts[: len(self.base)] != self.base:
            raise ModelRetry(f"{shown(path)} is outside the page's folder")
        return target

    def answer(self, url: str) -> Answer:
        """The file a workspace page asked for; raises ``ModelRetry`` for anything else."""
        self.requests += 1
        if self.requests > self.max_requests:
            raise ModelRetry(f"the page made more than {self.max_requests} requests")
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin or not parts.path.startswith("/"):
            self.blocked.append(url)
            raise ModelRetry(f"a workspace page cannot load {url}")
        path = unquote(parts.path)[1:]
        try:
            target = self.checked(path)
        except ModelRetry:
            self.blocked.append(url)
            raise
        return self._read(target, url)

    def _read(self, target: Target, url: str) -> Answer:
        ws = self.workspace
        fd = ws.open_file(target, READ_FLAGS)
        with open(fd, "rb", buffering=0) as f:
            data = f.read(self.max_bytes - self.spent + 1)
        self.spent += len(data)
        if self.spent > self.max_bytes:
            raise ModelRetry(f"the page and its files are over {self.max_bytes:,} bytes")
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return Answer(url, 200, {"content-type": media}, data)
