"""The HTTP toolkit: SSRF refusals against a canary, readable text, limits, redirects, TLS.

Everything runs on loopback: a canary server on 127.0.0.1 and [::1] counts every connection
(it must see none), and a "site" server on 127.0.0.2 is the one host the tests allow.
Names that would need DNS are served by a stub of the guard's resolver.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from figures import figure
from loopwise import Agent, ModelRetry, ToolResultPart, UsageError
from loopwise.messages import UserMessage
from loopwise.models.testing import ScriptedModel, call
from loopwise.toolkits import _netguard, _webtext
from loopwise.toolkits._netguard import Policy, classify, parse_url
from loopwise.toolkits.http import FetchRefused, http
from loopwise.tools import Tool

# The module itself (``loopwise.toolkits.http`` may be the function once exported).
http_module = importlib.import_module("loopwise.toolkits.http")
SITE_HOST = "127.0.0.2"
PAGE = b"""<!doctype html><html><head><title>Docs home</title>
<style>body { color: red }</style><script>var secret = "tracking-code";</script></head>
<body><nav><a href="/menu">Menu entry</a></nav>
<main><h1>Getting started</h1><p>Read the <a href="/guide">install guide</a> first.</p>
<h2>Steps</h2><ul><li>Install</li><li>Run</li></ul><img src="data:image/png;base64,AAAA"></main>
<footer>Copyright footer</footer></body></html>"""


# ---------------------------------------------------------------------------------------
# Local servers


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.connections = 0
        super().__init__(address, handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Canary(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"canary reached")

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Site:
    """Lets the tests end the site server's slow routes."""

    stop: threading.Event = field(default_factory=threading.Event)


class _SiteHandler(BaseHTTPRequestHandler):
    site: Site

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        route = _ROUTES.get(parts.path)
        if route is None:
            self.reply(404, "text/html", b"<h1>Not here</h1><p>No such page.</p>")
        else:
            route(self, parse_qs(parts.query))

    def reply(self, status: int, ctype: str | None, body: bytes, **headers: str) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        for _ in range(100):
            try:
                self.wfile.write(b"tick ")
                self.wfile.flush()
            except OSError:
                return
            if self.site.stop.wait(0.05):
                return

    def hang(self) -> None:
        self.site.stop.wait(3)

    def redirect(self, query: dict[str, list[str]]) -> None:
        self.reply(302, "text/plain", b"moved", Location=query["to"][0])

    def log_message(self, *args: Any) -> None:
        pass


_ROUTES: dict[str, Callable[[_SiteHandler, dict[str, list[str]]], None]] = {
    "/page.html": lambda h, q: h.reply(200, "text/html; charset=utf-8", PAGE),
    "/data.json": lambda h, q: h.reply(200, "application/json", b'{"a":1,"b":[true,null]}'),
    "/big.txt": lambda h, q: h.reply(200, "text/plain", b"0123456789" * 5_000),
    "/image.png": lambda h, q: h.reply(200, "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
    "/untyped-bin": lambda h, q: h.reply(200, None, b"\x00\x01\x02binary"),
    "/untyped-text": lambda h, q: h.reply(200, None, b"plain words"),
    "/latin1": lambda h, q: h.reply(
        200, "text/plain; charset=iso-8859-1", "café".encode("latin-1")
    ),
    "/meta-charset": lambda h, q: h.reply(
        200, "text/html", b'<meta charset="windows-1252"><p>price: 5\x80</p>'
    ),
    "/gzip": lambda h, q: h.reply(
        200, "text/plain", gzip.compress(b"unzipped " * 100), Content_Encoding="gzip"
    ),
    "/echo": lambda h, q: h.reply(
        200, "application/json", json.dumps({"host": h.headers["Host"]}).encode()
    ),
    "/redirect": _SiteHandler.redirect,
    "/relative": lambda h, q: h.reply(301, "text/plain", b"", Location="data.json"),
    "/loop": lambda h, q: h.reply(302, "text/plain", b"", Location="/loop"),
    "/slow": lambda h, q: h.drip(),
    "/hang": lambda h, q: h.hang(),
}


def _site_handler(site: Site) -> type[_SiteHandler]:
    return type("SiteHandler", (_SiteHandler,), {"site": site})


def _serve(server: _Server) -> None:
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()


@dataclass
class Servers:
    canaries: list[_Server]
    site_server: _Server
    site: Site

    @property
    def canary_port(self) -> int:
        return self.canaries[0].server_port

    @property
    def site_port(self) -> int:
        return self.site_server.server_port

    @property
    def hits(self) -> int:
        return sum(c.connections for c in self.canaries)

    def url(self, path: str) -> str:
        return f"http://{SITE_HOST}:{self.site_port}{path}"


def _canaries() -> list[_Server]:
    """A canary on 127.0.0.1:P and, when IPv6 works here, on [::1]:P (the same port)."""
    for _ in range(10):
        v4 = _Server(("127.0.0.1", 0), _Canary)
        try:
            v6 = _Server6(("::1", v4.server_port), _Canary)
        except OSError:
            v4.server_close()
            continue
        return [v4, v6]
    return [_Server(("127.0.0.1", 0), _Canary)]


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    site = Site()
    canaries = _canaries()
    site_server = _Server((SITE_HOST, 0), _site_handler(site))
    for server in [*canaries, site_server]:
        _serve(server)
    yield Servers(canaries, site_server, site)
    site.stop.set()
    for server in [*canaries, site_server]:
        server.shutdown()
        server.server_close()


def get(tool: Tool, url: str, **args: Any) -> str:
    return str(asyncio.run(tool.call({"url": url, **args}, None)))


@pytest.fixture
def site_tool() -> Tool:
    [tool] = http(allow=[SITE_HOST])
    return tool


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names to addresses for the guard's resolver; other names go to the real one."""
    table: dict[str, list[str]] = {}
    real = _netguard.resolve

    def resolve(host: str, port: int) -> list[_netguard.IPAddress]:
        if host in table:
            return [ipaddress.ip_address(a) for a in table[host]]
        return real(host, port)

    monkeypatch.setattr(_netguard, "resolve", resolve)
    return table


# ---------------------------------------------------------------------------------------
# SSRF corpus (security test 3)


def ssrf_payloads(p: int, q: int) -> list[str]:
    """URLs aimed at the canary (port ``p``) or other internal targets; ``q`` is the site."""
    site = f"http://{SITE_HOST}:{q}"
    canary = f"http://127.0.0.1:{p}/"
    direct = [
        canary, f"http://127.0.0.1:{p}", f"HTTP://127.0.0.1:{p}/", f" {canary} ",
        f"http://[::1]:{p}/", f"http://localhost:{p}/", f"http://localhost.:{p}/",
        f"http://LOCALHOST:{p}/", f"http://rebind.test:{p}/", f"http://mixed.test:{p}/",
        f"http://2130706433:{p}/", f"http://0x7f000001:{p}/", f"http://0x7f.1:{p}/",
        f"http://0177.0.0.1:{p}/", f"http://017700000001:{p}/", f"http://127.1:{p}/",
        f"http://127.0.1:{p}/", f"http://0x7f.0x0.0x0.0x1:{p}/", f"http://127.000.000.001:{p}/",
        f"http://0.0.0.0:{p}/", f"http://0:{p}/", f"http://[::]:{p}/",
        f"http://[::ffff:127.0.0.1]:{p}/", f"http://[::ffff:7f00:1]:{p}/",
        f"http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/", f"http://[::127.0.0.1]:{p}/",
        f"http://[64:ff9b::7f00:1]:{p}/", f"http://[2002:7f00:1::]:{p}/",
        f"http://[::1%25lo]:{p}/", f"http://[fe80::1%25lo]:{p}/",
        "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/",
        "http://[::ffff:169.254.169.254]/", "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata.google.internal./", "http://10.0.0.1/", "http://172.16.0.1/",
        "http://192.168.1.1/", "http://100.64.0.1/", "http://[fc00::1]/", "http://224.0.0.1/",
        "http://255.255.255.255/", f"http://{SITE_HOST}@127.0.0.1:{p}/",
        f"http://user:pass@127.0.0.1:{p}/", f"http://127.0.0.1:{p}#@{SITE_HOST}:{q}/",
        f"http://127.0.0.1:{p}?@{SITE_HOST}:{q}/", f"{site}\\@127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}\\@{SITE_HOST}/", f"http://%31%32%37.0.0.1:{p}/",
        f"http://127.0.0.1%2f@{SITE_HOST}:{q}/", f"http://\uff11\uff12\uff17.0.0.1:{p}/",
        f"http://127.0.0.1:{p}/\r\nX-Injected: 1", "file:///etc/passwd",
        f"ftp://127.0.0.1:{p}/", f"gopher://127.0.0.1:{p}/_GET%20/", f"dict://127.0.0.1:{p}/info",
        "data:text/html,<h1>hi</h1>", f"//127.0.0.1:{p}/", f"127.0.0.1:{p}",
    ]  # fmt: skip
    redirected = [
        canary, f"http://[::ffff:127.0.0.1]:{p}/", f"http://2130706433:{p}/",
        f"http://localhost:{p}/", f"//127.0.0.1:{p}/", f"http://rebind.test:{p}/",
        "http://169.254.169.254/", "file:///etc/passwd", f"gopher://127.0.0.1:{p}/",
        f"/redirect?to=http://127.0.0.1:{p}/",
    ]  # fmt: skip
    return direct + [f"{site}/redirect?to={target}" for target in redirected]


def test_ssrf_corpus_never_reaches_the_canary(
    servers: Servers, fake_dns: dict[str, list[str]]
) -> None:
    fake_dns.update({"rebind.test": ["127.0.0.1"], "mixed.test": ["93.184.216.34", "::1"]})
    payloads = ssrf_payloads(servers.canary_port, servers.site_port)
    configs = {
        "default": http(),
        "site allowed": http(allow=[SITE_HOST]),
        "named allow-list": http(allow=["site.test", "rebind.test", SITE_HOST]),
    }
    before = servers.hits
    for name, [tool] in configs.items():
        for url in payloads:
            with pytest.raises(FetchRefused) as refused:
                get(tool, url)
            message = refused.value.message
            assert message.startswith("Refused to fetch") and "\n" not in message, (name, url)
            if name == "site allowed" and "/redirect?to=" in url:
                assert "redirected from" in message, url
    hits = servers.hits - before
    figure(
        f"SSRF payloads: {len(payloads)} x {len(configs)} configurations, hits on canary: {hits}"
    )
    assert len(payloads) >= 30
    assert hits == 0


def test_the_canary_counts_when_allowed(servers: Servers) -> None:
    """Control: the same canary does see a fetch that is explicitly allowed."""
    [tool] = http(allow=["127.0.0.1", "::1"])
    before = servers.hits
    assert "canary reached" in get(tool, f"http://127.0.0.1:{servers.canary_port}/")
    assert "canary reached" in get(tool, f"http://[::ffff:127.0.0.1]:{servers.canary_port}/")
    if len(servers.canaries) == 2:
        assert "canary reached" in get(tool, f"http://[::1]:{servers.canary_port}/")
    assert servers.hits - before == len(servers.canaries) + 1


def test_dns_is_resolved_once_and_the_checked_address_is_used(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the second answer (loopback) is never asked for, never connected to."""
    answers = iter([[SITE_HOST], ["127.0.0.1"], ["127.0.0.1"]])
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[_netguard.IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(a) for a in next(answers)]

    monkeypatch.setattr(_netguard, "resolve", resolve)
    [tool] = http(allow=[SITE_HOST])
    before = servers.hits
    out = get(tool, f"http://flip.test:{servers.site_port}/echo")
    assert f'"host": "flip.test:{servers.site_port}"' in out
    assert asked == ["flip.test"] and servers.hits == before


def test_refusal_message_names_url_address_and_remedy() -> None:
    [tool] = http()
    with pytest.raises(FetchRefused) as refused:
        get(tool, "http://0x7f.1:8080/admin")
    assert refused.value.message == (
        "Refused to fetch http://0x7f.1:8080/admin: 0x7f.1 resolves to 127.0.0.1, a loopback "
        "address; if that is intended, the developer can allow it with "
        "http(allow=['127.0.0.1'])."
    )


# ---------------------------------------------------------------------------------------
# Address and policy checks


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("172.32.0.1", None),
        ("100.128.0.1", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::8.8.8.8", None),
        ("2002:808:808::1", None),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "RFC 1918"),
        ("172.31.255.255", "RFC 1918"),
        ("192.168.0.1", "RFC 1918"),
        ("100.64.0.1", "CGNAT"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.0.192", "special-purpose"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "unique local"),
        ("fd00:ec2::254", "metadata"),
        ("ff02::1", "multicast"),
        ("fec0::1", "site-local"),
        ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
        ("64:ff9b::10.0.0.1", "NAT64 form of 10.0.0.1"),
        ("64:ff9b:1::1", "NAT64"),
        ("2002:a00:1::", "6to4 form of 10.0.0.1"),
        ("2001::1", "Teredo"),
        ("2001:db8::1", "documentation"),
        ("100::1", "discard"),
    ],
)
def test_classify(address: str, reason: str | None) -> None:
    found = classify(ipaddress.ip_address(address))
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_parse_url_is_strict_and_normalises() -> None:
    target = parse_url("HTTPS://Docs.Example.COM.:443/a b?q=é#frag")
    assert (target.scheme, target.host, target.port) == ("https", "docs.example.com", 443)
    assert target.url == "https://docs.example.com/a%20b?q=%C3%A9"
    assert parse_url("http://[::1]:8080").url == "http://[::1]:8080/"
    assert parse_url("http://bücher.example/").host == "xn--bcher-kva.example"
    for bad in [
        "http://",
        "http:///x",
        "http://a b/",
        "http://x:99999/",
        "http://x:0/",
        "http://-a/",
    ]:
        with pytest.raises(FetchRefused):
            parse_url(bad)


def _check(policy: Policy, url: str) -> None:
    _netguard.check(url, policy)


def test_named_allow_list(fake_dns: dict[str, list[str]]) -> None:
    fake_dns.update(
        {
            "docs.test": ["93.184.216.34"],
            "a.b.example.com": ["93.184.216.35"],
            "example.com": ["93.184.216.36"],
            "other.test": ["93.184.216.37"],
            "intranet.test": ["10.1.2.3"],
            "www.xn--bcher-kva.test": ["93.184.216.38"],
        }
    )
    policy = Policy.build(["docs.test", "*.example.com", "10.1.2.0/24"], [])
    _check(policy, "https://docs.test/x")
    _check(policy, "https://a.b.example.com/")
    # An allowed network does not add names: intranet.test is not on the allow-list.
    for refused in [
        "https://example.com/",
        "https://other.test/",
        "http://evil-docs.test/",
        "http://docs.test.evil.test/",
        "http://intranet.test/",
    ]:
        with pytest.raises(FetchRefused, match="not among the allowed hosts"):
            _check(policy, refused)
    with pytest.raises(FetchRefused, match="not among the allowed hosts"):
        _check(policy, "http://93.184.216.34/")
    _check(policy, "http://10.1.2.9/")
    _check(policy, "http://[::ffff:10.1.2.9]/")
    _check(Policy.build(["*.bücher.test"], []), "http://www.xn--bcher-kva.test/")


def test_allowed_names_still_need_public_or_allowed_addresses(
    fake_dns: dict[str, list[str]],
) -> None:
    fake_dns.update({"wiki.corp": ["10.1.2.3"]})
    with pytest.raises(FetchRefused, match=r"wiki.corp resolves to 10.1.2.3, a private"):
        _check(Policy.build(["wiki.corp"], []), "http://wiki.corp/")
    _check(Policy.build(["wiki.corp", "10.1.2.3"], []), "http://wiki.corp/")


def test_deny_wins(fake_dns: dict[str, list[str]]) -> None:
    fake_dns.update({"ads.bad.test": ["93.184.216.34"], "cdn.test": ["93.184.216.34"]})
    policy = Policy.build(["127.0.0.1"], ["*.bad.test", "93.184.216.0/24", "127.0.0.1"])
    with pytest.raises(FetchRefused, match="deny entry"):
        _check(policy, "http://ads.bad.test/")
    with pytest.raises(FetchRefused, match="denied network"):
        _check(policy, "http://cdn.test/")
    with pytest.raises(FetchRefused, match="denied network"):
        _check(policy, "http://[::ffff:127.0.0.1]/")
    _check(Policy.build([], []), "http://cdn.test/")


def test_bad_configuration_is_a_usage_error() -> None:
    for allow in (["http://example.com"], ["exa mple.com"], ["*"]):
        with pytest.raises(UsageError, match="not a host name"):
            http(allow=allow)
    with pytest.raises(UsageError, match="list of entries"):
        http(allow="127.0.0.1")
    with pytest.raises(UsageError, match="timeout"):
        http(timeout=0)


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_webtext, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r"pip install 'loopwise\[http\]'"):
        http()


# ---------------------------------------------------------------------------------------
# Reading allowed pages


def test_html_becomes_readable_markdown(servers: Servers, site_tool: Tool) -> None:
    out = get(site_tool, servers.url("/page.html"))
    head, _, body = out.partition("\n\n")
    assert head == f"HTTP 200 OK · text/html · {servers.url('/page.html')}"
    assert body.startswith("Title: Docs home")
    assert "# Getting started" in body and "## Steps" in body and "- Install" in body
    assert f"[install guide]({servers.url('/guide')})" in body
    for gone in ("tracking-code", "color: red", "Menu entry", "Copyright footer", "base64"):
        assert gone not in out
    assert site_tool.idempotent


def test_json_is_pretty_printed(servers: Servers, site_tool: Tool) -> None:
    out = get(site_tool, servers.url("/data.json"))
    assert out.endswith('{\n  "a": 1,\n  "b": [\n    true,\n    null\n  ]\n}')


def test_size_limits_truncate_with_a_marker(servers: Servers) -> None:
    [tool] = http(allow=[SITE_HOST], max_bytes=10_000, max_chars=4_000)
    out = get(tool, servers.url("/big.txt"))
    assert "[truncated: stopped reading at 10,000 bytes]" in out
    assert "showing characters 0-4,000 of 10,000; call http_get again with offset=4000" in out
    rest = get(tool, servers.url("/big.txt"), offset=8_000)
    assert "[showing characters 8,000-10,000 of 10,000]" in rest
    assert "past the end" in get(tool, servers.url("/big.txt"), offset=20_000)


def test_a_dripping_server_hits_the_total_time_limit(servers: Servers) -> None:
    [tool] = http(allow=[SITE_HOST], timeout=0.4)
    started = time.monotonic()
    out = get(tool, servers.url("/slow"))
    elapsed = time.monotonic() - started
    assert "[truncated: the 0.4 s time limit was reached after" in out and "tick" in out
    with pytest.raises(ModelRetry, match=r"did not answer within the 0.4 s time limit"):
        get(tool, servers.url("/hang"))
    total = time.monotonic() - started
    print(f"\ndripping body cut after {elapsed:.2f} s; silent server after {total - elapsed:.2f} s")
    assert elapsed < 1.5 and total - elapsed < 1.5


def test_error_status_is_reported_not_raised(servers: Servers, site_tool: Tool) -> None:
    out = get(site_tool, servers.url("/nowhere"))
    assert out.startswith("HTTP 404 Not Found · text/html ·") and "# Not here" in out


def test_redirects_are_followed_and_bounded(servers: Servers, site_tool: Tool) -> None:
    out = get(site_tool, servers.url("/redirect?to=/relative"))
    assert out.startswith(f"HTTP 200 OK · application/json · {servers.url('/data.json')}")
    with pytest.raises(ModelRetry, match="Stopped after 5 redirects"):
        get(site_tool, servers.url("/loop"))


def test_binary_content_is_refused_clearly(servers: Servers, site_tool: Tool) -> None:
    with pytest.raises(ModelRetry, match=r"HTTP 200 with binary content \(image/png\)"):
        get(site_tool, servers.url("/image.png"))
    with pytest.raises(ModelRetry, match="binary content"):
        get(site_tool, servers.url("/untyped-bin"))
    assert get(site_tool, servers.url("/untyped-text")).endswith("plain words")


def test_charsets_and_compression(servers: Servers, site_tool: Tool) -> None:
    assert get(site_tool, servers.url("/latin1")).endswith("café")
    assert get(site_tool, servers.url("/meta-charset")).endswith("price: 5€")
    out = get(site_tool, servers.url("/gzip"))
    assert out.count("unzipped") == 100


def test_https_uses_the_original_name_for_sni_and_certificate(
    servers: Servers,
    fake_dns: dict[str, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=secure.test", "-addext", "subjectAltName=DNS:secure.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    names: list[str | None] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)
    tls_server = _Server((SITE_HOST, 0), _site_handler(servers.site))
    tls_server.socket = server_ctx.wrap_socket(tls_server.socket, server_side=True)
    _serve(tls_server)

    def client_context() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(cert))

    monkeypatch.setattr(http_module, "_tls_context", client_context)
    fake_dns.update({"secure.test": [SITE_HOST], "wrong.test": [SITE_HOST]})
    [tool] = http(allow=[SITE_HOST])
    port = tls_server.server_port
    try:
        out = get(tool, f"https://secure.test:{port}/echo")
        assert out.startswith(f"HTTP 200 OK · application/json · https://secure.test:{port}/echo")
        assert f'"host": "secure.test:{port}"' in out and names == ["secure.test"]
        with pytest.raises(ModelRetry, match=r"TLS certificate of https://wrong\.test"):
            get(tool, f"https://wrong.test:{port}/echo")
    finally:
        tls_server.shutdown()
        tls_server.server_close()


# ---------------------------------------------------------------------------------------
# End to end with a scripted model


def test_agent_corrects_a_bad_call_then_reads_the_page(servers: Servers) -> None:
    url = servers.url("/page.html")
    model = ScriptedModel(
        [
            call("http_get", link=url),
            call("http_get", url="http://169.254.169.254/latest/meta-data/"),
            call("http_get", url=url),
            "The page explains how to get started.",
        ]
    )
    result = Agent(model, tools=http(allow=[SITE_HOST])).run_sync("Summarise the docs page.")
    assert result.status == "completed"
    assert result.output == "The page explains how to get started."

    def observed(turn: int) -> ToolResultPart:
        message = model.requests[turn].messages[-1]
        assert isinstance(message, UserMessage)
        [part] = message.parts
        assert isinstance(part, ToolResultPart)
        return part

    invalid, refused, page = observed(1), observed(2), observed(3)
    assert invalid.is_error and "field 'link': unknown field" in invalid.content
    assert "field 'url': Field required" in invalid.content
    assert refused.is_error and refused.content.startswith(
        "ERROR: Refused to fetch http://169.254.169.254/latest/meta-data/: 169.254.169.254 is "
        "the cloud metadata address"
    )
    assert not page.is_error and page.content.startswith(f"HTTP 200 OK · text/html · {url}")
    assert "# Getting started" in page.content
