"""The browser toolkit: ``screenshot`` of a web page or a workspace HTML file, for the model.

Headless Chromium, driven by Playwright's Python API (``pip install 'loopwise[browser]'``)
with the system's browser (Debian: ``apt-get install chromium``; Playwright's own browser
download is not needed). Chromium makes no connection of its own: every request is
intercepted and fetched by loopwise under the same address rules as ``http_get``
(:mod:`._browserfetch`), redirects included; anything that would slip past interception
goes to a proxy that refuses all connections. WebSockets are answered by nothing, service
workers are blocked, and only GET requests are made, so a page cannot post anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelRetry, UsageError
from ..messages import ImagePart
from ..tools import Tool, tool
from ._browserfetch import WORKSPACE_ORIGIN, PageFetcher
from ._netguard import Policy
from ._paths import Workspace, shown

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

    ``allow``/``deny`` are ``http()``'s address rules (private and loopback addresses are
    refused unless allowed). ``timeout`` bounds one screenshot; ``max_bytes`` and
    ``max_requests`` bound everything the page loads. Chromium runs with ``--no-sandbox``
    only when loopwise runs as root (Chromium's sandbox refuses root); the address rules
    and the refusing proxy apply either way.
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
                (e.g. "site/index.html").
            full_page: Capture the whole scrolling page (up to 8000 pixels tall), not
                just the window.
        """
        return await shot.take(target, full_page)

    return [tool(idempotent=True, timeout=timeout + 15)(screenshot)]


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

    def _url(self, target: str) -> str:
        text = target.strip()
        if "://" in text:
            if not text.lower().startswith(("http://", "https://")):
                raise ModelRetry(f"only http(s) URLs and workspace files work, not {text!r}")
            return text
        if self.workspace is None:
            raise ModelRetry(
                f"{shown(text)} is not an http(s) URL, and no workspace was given for files."
            )
        rel = self.workspace.resolve(text).rel
        return f"{WORKSPACE_ORIGIN}/{rel}"

    async def take(self, target: str, full_page: bool) -> list[str | ImagePart]:
        url = self._url(target)
        fetcher = PageFetcher(
            self.policy,
            self.workspace,
            time.monotonic() + self.timeout,
            self.max_bytes,
            self.max_requests,
            "Mozilla/5.0 (X11; Linux x86_64) loopwise-screenshot",
        )
        # The page itself first: a refusal or a missing file is the tool's error.
        first = await asyncio.to_thread(fetcher.fetch, url, {"accept": "text/html,*/*"})
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                png, title = await self._shoot(first.url, first, fetcher, full_page)
        except TimeoutError:
            raise ModelRetry(f"{target} did not load within {self.timeout:g} s.") from None
        note = f"Screenshot of {first.url} (HTTP {first.status}), title {title!r}"
        note += f", {time.perf_counter() - started:.1f} s"
        if fetcher.refused:
            refused = ", ".join(fetcher.refused[:5])
            note += f"; {len(fetcher.refused)} request(s) refused by the address rules: {refused}"
        image = ImagePart(media_type="image/png", data=base64.b64encode(png).decode())
        return [note, image]

    async def _shoot(
        self, url: str, first: Any, fetcher: PageFetcher, full_page: bool
    ) -> tuple[bytes, str]:
        from playwright.async_api import (
            Error,
            FloatRect,
            Route,
            WebSocketRoute,
            async_playwright,
        )

        served = {url: first}

        async def handle(route: Route) -> None:
            request = route.request
            if request.method not in ("GET", "HEAD"):
                await route.abort("blockedbyclient")
                return
            answer = served.pop(request.url, None)
            if answer is None:
                try:
                    answer = await asyncio.to_thread(
                        fetcher.fetch, request.url, dict(request.headers)
                    )
                except (ModelRetry, TimeoutError, OSError):
                    await route.abort("blockedbyclient")
                    return
            await route.fulfill(status=answer.status, headers=answer.headers, body=answer.body)

        async def no_socket(ws: WebSocketRoute) -> None:
            await ws.close()  # answered by nothing: never connected to the server

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
                    )
                    await context.route("**/*", handle)
                    await context.route_web_socket("**/*", no_socket)
                    page = await context.new_page()
                    try:
                        await page.goto(url, wait_until="load")
                    except Error as exc:
                        raise ModelRetry(f"{url} could not be loaded: {exc.message}") from None
                    title = await page.title()
                    clip: FloatRect | None = None
                    if full_page:
                        height = await page.evaluate("document.documentElement.scrollHeight")
                        tall = min(int(height or 0) or self.viewport[1], _MAX_HEIGHT)
                        clip = {"x": 0, "y": 0, "width": self.viewport[0], "height": tall}
                    png = await page.screenshot(full_page=full_page, clip=clip)
                finally:
                    await chromium.close()
        return png, title


def _chromium_args(proxy: str) -> list[str]:
    args = [
        f"--proxy-server={proxy}",
        "--proxy-bypass-list=<-loopback>",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
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
