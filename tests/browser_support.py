"""Shared by the browser tests: is Chromium here, and an attacker server that records hits.

Under ``CI=true`` a missing Chromium is installed when possible (root with apt-get) and
otherwise the tests fail, so CI never skips them silently.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CI = os.environ.get("CI", "").lower() == "true"
GIF = bytes.fromhex(
    "47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b"
)


def _try_install() -> None:
    """In CI, as root with apt-get: install Chromium (a few minutes, once)."""
    if not (CI and os.geteuid() == 0 and shutil.which("apt-get")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, timeout=600, check=False)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"], env=env, timeout=900, check=False
    )


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when Playwright and Chromium are present."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install 'loopwise[browser]')"
    from loopwise.toolkits.browser import find_chromium

    if find_chromium() is None:
        _try_install()
    if find_chromium() is None:
        return "no Chromium found (apt-get install chromium, or set LOOPWISE_CHROMIUM)"
    return None


class Attacker:
    """An HTTP server on 127.0.0.1 that serves attack pages and records every request.

    ``/redir?to=URL`` answers 302 to URL, ``/slow`` a GIF after ``hold`` seconds or once
    ``done()`` (to hold the page's load event while asynchronous attacks run); other paths
    come from ``pages`` or get 204.
    ``records`` holds each request's line, headers and body; ``connections`` counts
    accepted TCP connections, requests or not.
    """

    def __init__(self, pages: dict[str, bytes] | None = None) -> None:
        self.pages: dict[str, bytes] = dict(pages or {})
        self.records: list[bytes] = []
        self.connections = 0
        self.hold = 1.5
        self.done: Callable[[], bool] = lambda: False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.records.append(f"{self.requestline}\n{self.headers}".encode() + body)
                owner.answer(self)

            do_GET = do_POST = do_PUT = do_HEAD = do_OPTIONS = do_DELETE = _any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                owner.connections += 1
                return True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        """Reply to one request: a redirect, the slow GIF, a page, or 204."""
        parts = urlsplit(handler.path)
        status, headers, body = 204, {}, b""
        if parts.path == "/redir":
            status, headers = 302, {"Location": parse_qs(parts.query)["to"][0]}
        elif parts.path == "/slow":
            deadline = time.monotonic() + self.hold
            while time.monotonic() < deadline and not self.done():
                time.sleep(0.05)
            status, headers, body = 200, {"Content-Type": "image/gif"}, GIF
        elif parts.path in self.pages:
            status, headers, body = 200, {"Content-Type": "text/html"}, self.pages[parts.path]
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def count(self, needle: str) -> int:
        """How many bytes of ``needle`` reached this server (occurrences times length)."""
        raw = needle.encode()
        return sum(r.count(raw) for r in self.records) * len(raw)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class UdpCanary:
    """A UDP socket on ``host`` counting datagrams (WebRTC STUN/TURN, QUIC/WebTransport)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65_536)
            except TimeoutError:
                continue
            self.datagrams.append(data)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()
