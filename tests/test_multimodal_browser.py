"""``screenshot`` in real headless Chromium: the picture reaches the model, and the page
cannot reach private addresses that were not allowed (redirects, images, fetch, WebSocket).

Needs Playwright and a system Chromium (Debian: ``apt-get install chromium``). Where they
are missing the tests are skipped with the reason; under ``CI=true`` they are installed
when possible (root with apt-get) and otherwise fail, so CI never skips them silently.
The origin attacks (workspace files, XSSI, exfiltration) are in test_attack_browser.py.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from browser_support import CI, UdpCanary, chromium_missing
from figures import figure
from loopwise import Agent
from loopwise.models.anthropic import AnthropicModel
from loopwise.models.retry import RetryPolicy
from wire_servers import Reply, ToolCall, WireServer


@pytest.fixture(scope="module", autouse=True)
def _needs_chromium() -> None:
    reason = chromium_missing()
    if reason is not None:
        if CI:
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)


class Site:
    """A page server on 127.0.0.1 (allowed in the tests that say so)."""

    def __init__(self, pages: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.pages = pages
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                site.hits.append(self.path)
                status, headers, body = site.pages.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in {"Content-Type": "text/html", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Canary:
    """A listener on 127.0.0.2 (not allowed) that counts every connection it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


def shoot(wire: WireServer, tools: list[Any], args: dict[str, Any]) -> dict[str, Any]:
    """Run an agent whose model asks for one screenshot; return the tool_result block."""
    wire.push(Reply(tool_calls=(ToolCall("screenshot", args, id="shot_1"),)), Reply(text="Seen."))
    model = AnthropicModel(
        "claude-test", base_url=wire.url, api_key="k", retry=RetryPolicy(initial_delay=0.01)
    )
    result = Agent(model, tools=tools).run_sync("Look at the page")
    assert result.status == "completed", result.error
    block: dict[str, Any] = wire.bodies[1]["messages"][-1]["content"][0]
    assert block["tool_use_id"] == "shot_1"
    return block


def pixel(block: dict[str, Any], xy: tuple[int, int]) -> tuple[int, ...]:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(block["source"]["data"]))) as im:
        return tuple(im.convert("RGB").getpixel(xy))  # type: ignore[arg-type]


GREEN_PAGE = b"<html><head><title>Status</title></head><body style='background:#00c000'>ok</body>"


def test_screenshot_of_a_local_page_reaches_the_model(wire: WireServer) -> None:
    from loopwise.toolkits import browser

    site = Site({"/": (200, {}, GREEN_PAGE)})
    try:
        started = time.perf_counter()
        block = shoot(wire, browser(allow=["127.0.0.1"]), {"target": site.url + "/"})
        took = time.perf_counter() - started
    finally:
        site.close()
    assert block["is_error"] is False
    text, image = block["content"]
    assert text["text"].startswith(f"Screenshot of {site.url}/ (HTTP 200), title 'Status'")
    assert image["type"] == "image" and image["source"]["media_type"] == "image/png"
    assert pixel(image, (640, 400)) == (0, 192, 0)  # really rendered: the page is green
    figure(f"multimodal: screenshot of a 127.0.0.1 page in headless Chromium, run {took:.2f} s")


def test_private_address_is_refused_unless_allowed(wire: WireServer) -> None:
    from loopwise.toolkits import browser

    site = Site({"/": (200, {}, GREEN_PAGE)})
    try:
        block = shoot(wire, browser(), {"target": site.url + "/"})
    finally:
        site.close()
    assert block["is_error"] is True
    assert "127.0.0.1 is a loopback address" in block["content"]
    assert "allow it with browser(allow=['127.0.0.1'])" in block["content"]
    assert site.hits == []


def test_the_page_cannot_reach_addresses_that_are_not_allowed(wire: WireServer) -> None:
    from loopwise.toolkits import browser

    canary = Canary()
    udp = UdpCanary("127.0.0.2")
    target = f"http://127.0.0.2:{canary.port}"
    stun = f"127.0.0.2:{udp.port}"
    page = f"""<html><head><title>Probe</title></head><body>
      <img src="{target}/img.png"><iframe src="/bounce"></iframe>
      <script>
        fetch("{target}/post", {{method: "POST", body: "x"}}).catch(() => {{}});
        fetch("/bounce").catch(() => {{}});
        try {{ new WebSocket("ws://127.0.0.2:{canary.port}/ws"); }} catch (e) {{}}
        try {{
          var pc = new RTCPeerConnection({{iceServers: [{{urls: "stun:{stun}"}},
            {{urls: "turn:{stun}?transport=udp", username: "u", credential: "p"}}]}});
          pc.createDataChannel("x");
          pc.createOffer().then(function (o) {{ return pc.setLocalDescription(o); }});
        }} catch (e) {{}}
        var end = Date.now() + 1000; while (Date.now() < end) {{}}
      </script></body></html>""".encode()
    site = Site(
        {
            "/": (200, {}, page),
            "/bounce": (302, {"Location": f"{target}/redirected"}, b""),
        }
    )
    try:
        block = shoot(wire, browser(allow=["127.0.0.1"]), {"target": site.url + "/"})
        time.sleep(0.3)  # give any stray connection time to land before counting
    finally:
        site.close()
        canary.close()
        udp.close()
    assert block["is_error"] is False
    assert "refused by the address rules" in block["content"][0]["text"]
    assert canary.connections == 0 and udp.datagrams == []
    figure(
        "multimodal: screenshot SSRF probes (img, iframe redirect, fetch POST, fetch redirect, "
        f"WebSocket, WebRTC STUN/TURN) to 127.0.0.2: connections = {canary.connections}, "
        f"datagrams = {len(udp.datagrams)}"
    )


def test_workspace_file_is_shown_and_confined(wire: WireServer, tmp_path: Path) -> None:
    from loopwise.toolkits import browser

    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "secret.html").write_text("<title>secret</title>")
    (ws / "index.html").write_text(
        "<html><head><title>Local report</title></head>"
        "<body style='background:#0000c0'><iframe src='../secret.html'></iframe></body></html>"
    )
    tools = browser(workspace=ws)
    block = shoot(wire, tools, {"target": "index.html"})
    assert block["is_error"] is False
    assert "title 'Local report'" in block["content"][0]["text"]
    assert pixel(block["content"][1], (1200, 700)) == (0, 0, 192)
    wire.requests.clear()
    block = shoot(wire, tools, {"target": "../secret.html"})
    assert block["is_error"] is True and "outside the workspace" in block["content"]


def test_workspace_site_renders_from_its_own_folder(wire: WireServer, tmp_path: Path) -> None:
    """Stylesheets and images in subfolders of the page's folder load; full_page works."""
    from loopwise.toolkits import browser

    site = tmp_path / "ws" / "site"
    (site / "css").mkdir(parents=True)
    (site / "img").mkdir()
    (site / "css" / "style.css").write_text("body { background: #00c000; margin: 0 }")
    (site / "img" / "box.svg").write_text(
        "<svg xmlns='http://www.w3.org/2000/svg' width='300' height='200'>"
        "<rect width='300' height='200' fill='#0000c0'/></svg>"
    )
    (site / "index.html").write_text(
        "<html><head><title>Site</title><link rel='stylesheet' href='css/style.css?v=2'>"
        "</head><body><img src='img/box.svg'><div style='height:1500px'></div></body></html>"
    )
    block = shoot(wire, browser(workspace=tmp_path / "ws"), {"target": "site/index.html"})
    assert block["is_error"] is False, block["content"]
    text, image = block["content"]
    assert text["text"].startswith("Screenshot of the workspace file 'site/index.html'")
    assert "blocked" not in text["text"]
    assert pixel(image, (100, 100)) == (0, 0, 192)  # the image from img/
    assert pixel(image, (1000, 600)) == (0, 192, 0)  # the stylesheet from css/
    wire.requests.clear()
    block = shoot(
        wire, browser(workspace=tmp_path / "ws"), {"target": "site/index.html", "full_page": True}
    )
    assert block["is_error"] is False, block["content"]
    from PIL import Image

    data = base64.b64decode(block["content"][1]["source"]["data"])
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
    assert height > width  # the whole page, not the 1280x800 window (maybe scaled for the API)
    assert pixel(block["content"][1], (width * 3 // 4, height - 10)) == (0, 192, 0)


def test_frame_redirected_to_another_site_is_shown_at_its_own_origin(wire: WireServer) -> None:
    """A frame whose URL redirects to another (allowed) site still shows that site."""
    from loopwise.toolkits import browser

    other = Site({"/": (200, {}, GREEN_PAGE)})
    page = b"<html><body style='margin:0'><iframe src='/go' style='border:0;width:600px'>"
    site = Site(
        {
            "/": (200, {}, page + b"</iframe></body></html>"),
            "/go": (302, {"Location": other.url + "/"}, b""),
        }
    )
    try:
        block = shoot(wire, browser(allow=["127.0.0.1"]), {"target": site.url + "/"})
    finally:
        site.close()
        other.close()
    assert block["is_error"] is False, block["content"]
    assert pixel(block["content"][1], (300, 75)) == (0, 192, 0)
    assert other.hits == ["/"]
