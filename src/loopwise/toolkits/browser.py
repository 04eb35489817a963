"""The browser toolkit: ``screenshot`` of a web page or a workspace HTML file, for the model.

Headless Chromium, driven by Playwright's Python API (``pip install 'loopwise[browser]'``)
with the system's browser (Debian: ``apt-get install chromium``; Playwright's own browser
download is not needed). A fresh Chromium per screenshot makes no connection of its own:
every request is intercepted and answered by loopwise (:mod:`._browserfetch`), and
anything that slips past interception meets a proxy that refuses every connection, a
resolver that finds no host, and no WebRTC UDP. A screenshot is of one of two kinds:

- a web page: fetched under ``http_get``'s address rules, scripts on, only GET; it knows
  no workspace, so no redirect, script tag or frame can reach a workspace file;
- a workspace file: served at a random origin of its own, scripts off, and only files
  from its own folder (no hidden names, nothing a link leads out to); every other request
  is aborted, so a page that sandboxed code wrote cannot send anything anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..errors import ModelRetry, UsageError
from ..messages import ImagePart
from ..tools import Tool, tool
from . import _browserfetch
from ._browserfetch import (
    REDIRECTS,
    Answer,
    PageFetcher,
    WorkspaceFiles,
    browser_headers,
    hop_page,
)
from ._netguard import Policy
from ._paths import Workspace, shown

if TYPE_CHECKING:
    from playwright.async_api import Route, WebSocketRoute

__all__ = ["browser", "find_chromium"]

_INSTALL = "pip install 'loopwise[browser]' and apt-get install chromium"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_MAX_HEIGHT = 8000


def find_chromium(executable: str | None = None) -> str | None:
    """The Chromium to drive: ``executable``, ``LOOPWISE_CHROMIUM``, else one on PATH."""
    chosen = executable or os.environ.get("LOOPWISE_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser(
    *,
    workspace: str | Path | None = None,
    allow: Sequence[str] = (),
    deny: Sequence[str] = (),
    executable: str | None = None,
    timeout: float = 30.0,
    max_bytes: int = 20_000_000,
    max_requests: int = 200,
    viewport: tuple[int, int] = (1280, 800),
) -> list[Tool]:
    """The ``screenshot`` tool: a PNG of a page (or of an HTML file in ``workspace``).

    ``allow``/``deny`` are ``http()``'s address rules for web pages (private and loopback
    addresses are refused unless allowed); a workspace file's page never reaches the
    network at all. ``timeout`` bounds one screenshot; ``max_bytes`` and ``max_requests``
    bound everything the page loads. Chromium runs with ``--no-sandbox`` only when
    loopwise runs as root (Chromium's sandbox refuses root); the rest applies either way.
    """
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise UsageError(f"The browser toolkit needs Playwright; run: {_INSTALL}.") from None
    found = find_chromium(executable)
    if found is None:
        raise UsageError(f"No Chromium was found (set LOOPWISE_CHROMIUM); run: {_INSTALL}.")
    if timeout <= 0 or max_bytes < 1 or max_requests < 1 or min(viewport) < 1:
        raise UsageError("browser() limits must be positive.")
    shot = _Shooter(
        Policy.build(allow, deny, toolkit="browser"),
        Workspace(workspace) if workspace is not None else None,
        found,
        timeout,
        max_bytes,
        max_requests,
        viewport,
    )

    async def screenshot(target: str, full_page: bool = False) -> list[str | ImagePart]:
        """Take a screenshot of a web page, or of an HTML file in the workspace, to look at it.

        Args:
            target: An http(s) URL, or an HTML file path relative to the workspace
                (e.g. "site/index.html"; shown without JavaScript, loading only files
                from its own folder).
            full_page: Capture the whole scrolling page (up to 8000 pixels tall), not
                just the window.
        """
        return await shot.take(target, full_page)

    return [tool(idempotent=True, timeout=timeout + 15, effects=["read", "egress"])(screenshot)]


_WORKSPACE_JAVASCRIPT = False
"""Workspace pages run without scripts. Tests turn this on to attack the network layer alone."""


@dataclass(frozen=True, slots=True)
class _Asked:
    """A request of the page, as plain data for a worker thread."""

    url: str
    headers: dict[str, str]
    navigation: bool


@dataclass(slots=True)
class _Page:
    """What one screenshot loads: the first answer, how to answer the rest, how to say it."""

    url: str
    first: Answer
    answer: Callable[[_Asked], Answer]
    shown: str
    scripts: bool
    workspace: bool
    notes: Callable[[], str]

    def name(self, url: str) -> str:
        """How to name a URL of this page's for the model (a workspace file by its path)."""
        if self.workspace:
            origin = self.url.split("/", 3)
            prefix = "/".join(origin[:3]) + "/"
            if url.startswith(prefix):
                return f"the workspace file {unquote(url[len(prefix) :])!r}"
        return url


class _Shooter:
    def __init__(
        self,
        policy: Policy,
        workspace: Workspace | None,
        executable: str,
        timeout: float,
        max_bytes: int,
        max_requests: int,
        viewport: tuple[int, int],
    ) -> None:
        self.policy = policy
        self.workspace = workspace
        self.executable = executable
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_requests = max_requests
        self.viewport = viewport

    async def take(self, target: str, full_page: bool) -> list[str | ImagePart]:
        text = target.strip()
        if "://" in text:
            if not text.lower().startswith(("http://", "https://")):
                raise ModelRetry(f"only http(s) URLs and workspace files work, not {text!r}")
            page = await self._remote(text)
        else:
            page = await self._local(text)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                png, title, now = await self._shoot(page, full_page)
        except TimeoutError:
            raise ModelRetry(f"{target} did not load within {self.timeout:g} s.") from None
        note = f"Screenshot of {page.shown} (HTTP {page.first.status}), title {title!r}"
        note += f", {time.perf_counter() - started:.1f} s"
        if now.startswith("chrome-error:"):
            note += "; the page then went to an address that was blocked (an error page shows)"
        elif now != page.url:
            note += f"; the page went on to {page.name(now)}"
        note += page.notes()
        image = ImagePart(media_type="image/png", data=base64.b64encode(png).decode())
        return [note, image]

    async def _remote(self, url: str) -> _Page:
        """A web page: every request fetched under the address rules, no workspace at all."""
        fetcher = PageFetcher(
            self.policy,
            time.monotonic() + self.timeout,
            self.max_bytes,
            self.max_requests,
            "Mozilla/5.0 (X11; Linux x86_64) loopwise-screenshot",
        )
        # The page itself first: a refusal is the tool's error. Its redirects are followed
        # here; Chromium then loads the final URL, so the page has its real origin.
        first = await asyncio.to_thread(fetcher.fetch, url, {"accept": "text/html,*/*"})

        def answer(asked: _Asked) -> Answer:
            got = fetcher.fetch(asked.url, asked.headers, same_site=True)
            location = got.headers.get("location", "")
            if got.status not in REDIRECTS or not location:
                return got
            if asked.navigation and location.lower().startswith(("http://", "https://")):
                return hop_page(asked.url, location)
            fetcher.elsewhere.append(f"{asked.url} to {location}")
            raise ModelRetry(f"{asked.url} redirects to another site")

        def notes() -> str:
            text = ""
            if fetcher.refused:
                refused = ", ".join(fetcher.refused[:5])
                text += f"; {len(fetcher.refused)} request(s) refused by the address rules: "
                text += refused
            if fetcher.elsewhere:
                elsewhere = ", ".join(fetcher.elsewhere[:5])
                text += f"; {len(fetcher.elsewhere)} redirect(s) of an image, script or other "
                text += f"resource to another site not followed: {elsewhere}"
            return text

        return _Page(first.url, first, answer, first.url, True, False, notes)

    async def _local(self, path: str) -> _Page:
        """A workspace file at a fresh origin: only its own folder is served, nothing else."""
        if self.workspace is None:
            raise ModelRetry(
                f"{shown(path)} is not an http(s) URL, and no workspace was given for files."
            )
        origin = _browserfetch.new_workspace_origin()
        files = WorkspaceFiles(self.workspace, origin, self.max_bytes, self.max_requests)
        target, url = files.page(path)
        first = await asyncio.to_thread(files.answer, url)

        def answer(asked: _Asked) -> Answer:
            return files.answer(asked.url)

        def notes() -> str:
            if not files.blocked:
                return ""
            blocked = ", ".join(files.blocked[:5])
            return (
                f"; {len(files.blocked)} request(s) blocked, since a workspace page may load "
                f"only files from its own folder: {blocked}"
            )

        shown_as = f"the workspace file {target.rel!r}"
        return _Page(url, first, answer, shown_as, _WORKSPACE_JAVASCRIPT, True, notes)

    async def _shoot(self, page: _Page, full_page: bool) -> tuple[bytes, str, str]:
        from playwright.async_api import Error, async_playwright

        served = {page.url: page.first}

        async def handle(route: Route) -> None:
            request = route.request
            if request.method not in ("GET", "HEAD"):
                await route.abort("blockedbyclient")
                return
            answer = served.pop(request.url, None)
            if answer is None:
                asked = _Asked(request.url, request.headers, request.is_navigation_request())
                try:
                    answer = await asyncio.to_thread(page.answer, asked)
                except Exception:  # refused, missing, over a limit: never left hanging
                    await route.abort("blockedbyclient")
                    return
            headers = browser_headers(
                answer.headers, workspace=page.workspace, scripts=page.scripts
            )
            await route.fulfill(status=answer.status, headers=headers, body=answer.body)

        with _RefusingProxy() as proxy:
            async with async_playwright() as pw:
                chromium = await pw.chromium.launch(
                    executable_path=self.executable, args=_chromium_args(proxy)
                )
                try:
                    context = await chromium.new_context(
                        viewport={"width": self.viewport[0], "height": self.viewport[1]},
                        service_workers="block",
                        accept_downloads=False,
                        java_script_enabled=page.scripts,
                    )
                    await context.route("**/*", handle)
                    await context.route_web_socket("**/*", _no_socket)
                    tab = await context.new_page()
                    try:
                        await tab.goto(page.url, wait_until="load")
                    except Error as exc:
                        raise ModelRetry(
                            f"{page.shown} could not be loaded: {exc.message}"
                        ) from None
                    return (*await self._settled_capture(tab, page, full_page), tab.url)
                finally:
                    await chromium.close()

    async def _settled_capture(self, tab: Any, page: _Page, full_page: bool) -> tuple[bytes, str]:
        """Capture; a page caught mid-navigation (a meta refresh that was refused) gets one
        more try once it has settled, then a clear error."""
        from playwright.async_api import Error

        try:
            return await self._capture(tab, full_page)
        except Error:
            with contextlib.suppress(Error):
                await tab.wait_for_load_state("load", timeout=5_000)
            try:
                return await self._capture(tab, full_page)
            except Error as exc:
                raise ModelRetry(
                    f"{page.shown} could not be captured (it kept navigating): {exc.message}"
                ) from None

    async def _capture(self, tab: Any, full_page: bool) -> tuple[bytes, str]:
        from playwright.async_api import FloatRect

        title = await tab.title()
        clip: FloatRect | None = None
        if full_page:
            height = await tab.evaluate("document.documentElement.scrollHeight")
            tall = min(int(height or 0) or self.viewport[1], _MAX_HEIGHT)
            clip = {"x": 0, "y": 0, "width": self.viewport[0], "height": tall}
        png = await tab.screenshot(full_page=full_page, clip=clip)
        return png, title


async def _no_socket(ws: WebSocketRoute) -> None:
    await ws.close()  # answered by nothing: never connected to the server


def _chromium_args(proxy: str) -> list[str]:
    """Chromium reaches nothing by itself: a refusing proxy for all, loopback included, and
    a resolver that finds no host (no DNS lookups to leak names, e.g. by prefetch)."""
    args = [
        f"--proxy-server={proxy}",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",  # no WebRTC UDP (STUN, TURN)
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",  # its older name
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's own sandbox cannot run as root
    return args


class _RefusingProxy:
    """A bound, never-listening port on 127.0.0.1: every connection to it is refused."""

    def __enter__(self) -> str:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
