"""The HTTP service under attack: slowloris and connection floods, DNS rebinding and CSRF,
Idempotency-Key reuse. Real sockets against uvicorn on 127.0.0.1 (in a thread, or a real
``loopwise serve`` process); each class is attacked with several variants."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attack_support import (
    GuardedServer,
    closed_by_peer,
    guarded_service,
    raw,
    read_all,
    status_of,
)
from figures import figure
from loopwise.server.limits import ConnectionLimits
from server_helpers import Api, wait_status

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent
FAST = ConnectionLimits(header_seconds=1.0, body_seconds=1.0, keep_alive_seconds=5)
HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
CLOSE = HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")


# -- slowloris and connection floods ----------------------------------------------------


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedServer]:
    with guarded_service(tmp_path_factory.mktemp("slow"), FAST) as server:
        yield server


def _drip(sock: socket.socket, data: bytes, every: float, until: float) -> bytes:
    """Send ``data`` a byte at a time until the server answers or closes; its answer."""
    sock.settimeout(every)
    for byte in data:
        if time.monotonic() > until:
            break
        try:
            sock.send(bytes([byte]))
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return b""
        return answer + read_all(sock, 1.0)
    return b"(still open)"


def _slow(port: int, prefix: bytes, drip: bytes) -> tuple[bytes, float]:
    """Send ``prefix`` (reading one answer if it is a whole request), then drip ``drip``:
    what the server finally said (b"" = closed) and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(prefix)
        if prefix.startswith(b"GET") and prefix.endswith(b"\r\n\r\n"):
            assert status_of(sock.recv(65536)) == 200
        answer = _drip(sock, drip, 0.1, started + 6) if drip else read_all(sock, 6)
    return answer, time.monotonic() - started


SLOW_VARIANTS = {
    "silent connection": (b"", b""),
    "request line never finished": (b"", b"GET /healthz?" + b"a" * 100),
    "head one byte at a time": (
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 200,
    ),
    "endless header lines": (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-a: b\r\n" * 40),
    "body one byte at a time": (
        b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 400\r\n\r\n",
        b"{" + b" " * 399,
    ),
    "chunked body that never ends": (
        b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"1\r\n \r\n" * 60,
    ),
    "body after an early answer": (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300\r\n\r\n",
        b"x" * 300,
    ),
    "second request dripped on a kept-alive connection": (HEAD, b"GET /healthz HTTP/1.1\r\n" * 3),
}


def test_requests_that_arrive_too_slowly_are_cut_off(fast: GuardedServer) -> None:
    held = 0
    for name, (prefix, drip) in SLOW_VARIANTS.items():
        answer, took = _slow(fast.port, prefix, drip)
        assert answer != b"(still open)", name
        assert status_of(answer) in (0, 408), (name, answer[:200])
        if status_of(answer) == 408:
            assert b"did not arrive within 1 s" in answer
        assert took < 2.5, (name, took)
        held += 1
    # A request within the limits still works, even sent in pieces.
    with socket.create_connection(("127.0.0.1", fast.port)) as sock:
        for part in (HEAD[:10], HEAD[10:30], HEAD[30:]):
            sock.sendall(part)
            time.sleep(0.2)
        assert status_of(sock.recv(65536)) == 200
    figure(f"slowloris variants (1 s deadlines): {len(SLOW_VARIANTS)} tried, {held} cut off")


def _in_pieces(port: int, data: bytes, size: int = 4096) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            for i in range(0, len(data), size):
                sock.sendall(data[i : i + size])
                time.sleep(0.01)
        except OSError:
            pass
        return read_all(sock, 3)


def test_heads_that_keep_growing_are_refused(fast: GuardedServer) -> None:
    """A head still incomplete past 16 KiB is a 400 (h11's bound on what it buffers)."""
    huge = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    many = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-a: b\r\n" * 5000 + b"\r\n"
    target = b"GET /healthz?" + b"q" * 40_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for data in (huge, many, target):
        assert status_of(_in_pieces(fast.port, data)) in (0, 400)
    assert status_of(raw(fast.port, CLOSE)) == 200


def test_an_event_stream_outlives_the_request_deadlines(fast: GuardedServer) -> None:
    """Deadlines bound what the client sends, not how long the answer streams."""
    api = Api(fast.url)
    run = api.post("/v1/runs", {"agent": "gated", "input": "tidy"}).json()["id"]
    wait_status(api, run, "input_required")
    request = f"GET /v1/runs/{run}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", fast.port)) as sock:
        sock.sendall(request)
        sock.settimeout(0.5)
        received = b""
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            assert chunk, "the server closed a live event stream"
            received += chunk
    assert status_of(received) == 200 and received.count(b": ping") >= 5


def test_a_connection_flood_sheds_waiting_connections_not_healthz(tmp_path: Path) -> None:
    limits = ConnectionLimits(header_seconds=30, body_seconds=30, max_connections=40)
    with guarded_service(tmp_path, limits, workers=False) as server:
        flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(120)]
        try:
            for sock in flood[::2]:
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # half a head
            time.sleep(0.3)
            latencies = []
            for _ in range(10):
                started = time.monotonic()
                answer = raw(server.port, CLOSE, timeout=3)
                latencies.append(time.monotonic() - started)
                assert status_of(answer) == 200
            shed = sum(closed_by_peer(s) for s in flood)
        finally:
            for sock in flood:
                sock.close()
    assert max(latencies) < 1.0 and shed >= 120 - 40
    figure(
        f"connection flood: 120 idle/half-open connections, cap 40: {shed} shed, /healthz "
        f"10/10 answered, slowest {max(latencies) * 1000:.0f} ms"
    )


def _serve_process(
    tmp_path: Path, *args: str, fd_limit: tuple[int, int] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """A real ``loopwise serve`` (optionally with a low open-file limit); its URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env["PYTHONPATH"] = str(TESTS)
    env["LOOPWISE_DATA_DIR"] = str(tmp_path / "data")

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, fd_limit)

    command = [sys.executable, "-m", "loopwise", "serve", "--agents", "server_agents"]
    command += ["--port", "0", "--database", f"sqlite:///{tmp_path / 'runs.sqlite'}", *args]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "serve.log").open("w"),
        text=True,
        preexec_fn=limit,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"loopwise serving (http://\S+)", line)
        if found:
            (tmp_path / "announced.txt").write_text(proc.stdout.readline())
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, found[1]
    raise AssertionError("serve did not start: " + (tmp_path / "serve.log").read_text()[-2000:])


class Slowloris:
    """``n`` connections dripping a request head a byte per second, reconnecting when the
    server closes one; ``bodies`` more dripping a POST body. Runs in its own thread."""

    def __init__(self, port: int, n: int, bodies: int) -> None:
        self.port, self.n, self.bodies = port, n, bodies
        self.lifetimes: list[float] = []
        self.body_lifetimes: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _one(self, body: bool) -> None:
        head = b"GET /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 500
        post = (
            b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            opened = time.monotonic()
            if body:
                writer.write(post)
            closed = asyncio.ensure_future(reader.read())
            i = 0
            while not self.stop.is_set() and not closed.done():
                writer.write((b"{" if body else head)[i % 500 : i % 500 + 1])
                i += 1
                await asyncio.wait([closed], timeout=1.0)
            if closed.done():
                (self.body_lifetimes if body else self.lifetimes).append(time.monotonic() - opened)
            closed.cancel()
            writer.close()
            await asyncio.sleep(0.05)  # (this process shares the CPU with the server)

    async def _main(self) -> None:
        tasks = [
            asyncio.ensure_future(self._one(i < self.bodies)) for i in range(self.n + self.bodies)
        ]
        await asyncio.to_thread(self.stop.wait)
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> Slowloris:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.mark.slow
def test_loopwise_serve_answers_healthz_through_a_slowloris(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 8192)
    if wanted < 3000:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"the test needs 3000 open files; the hard limit is {hard}")
        pytest.skip(f"needs 3000 open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    timeouts = ["--header-timeout", "3", "--body-timeout", "3"]
    # A common default: 1024 open files (the soft limit), 4096 allowed (the hard one).
    proc, url = _serve_process(tmp_path, *timeouts, fd_limit=(1024, 4096))
    port = int(url.rsplit(":", 1)[1])
    latencies: list[float] = []
    failures = 0
    try:
        with Slowloris(port, 900, 100) as attack:  # 1000 connections, the default cap
            time.sleep(1.0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    answer = raw(port, CLOSE, timeout=1.0)
                    ok = status_of(answer) == 200
                except OSError:
                    ok = False
                took = time.monotonic() - started
                latencies.append(took)
                failures += not ok or took >= 1.0
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
    cut = sorted(attack.lifetimes)
    bodies = sorted(attack.body_lifetimes)
    figure(
        f"slowloris on loopwise serve (fd limit 1024, 3 s deadlines): 900 dripping heads + "
        f"100 dripping bodies, reconnecting; /healthz {len(latencies) - failures}/"
        f"{len(latencies)} answered within 1 s (slowest {max(latencies) * 1000:.0f} ms); "
        f"{len(cut)} head and {len(bodies)} body connections cut, longest lived "
        f"{max(cut + bodies):.1f} s"
    )
    assert failures == 0 and len(latencies) >= 20
    assert len(cut) >= 900 and len(bodies) >= 100
    assert max(cut + bodies) < 3 + 1.5


# -- DNS rebinding and cross-site requests ----------------------------------------------


@pytest.fixture(scope="module")
def keyless(fast: GuardedServer) -> GuardedServer:
    """The module's server: keyless, as ``loopwise serve --no-auth`` on 127.0.0.1."""
    return fast


def _request(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """One raw request (``head`` without the final blank line): status and whole reply."""
    data = head.replace("{port}", str(port)).encode() + b"\r\nConnection: close\r\n"
    if body:
        data += f"Content-Length: {len(body)}\r\n".encode()
    reply = raw(port, data + b"\r\n" + body)
    return status_of(reply), reply


HOSTS_SERVED = [
    "127.0.0.1:{port}",
    "127.0.0.1",
    "localhost:{port}",
    "LOCALHOST:{port}",
    "localhost.:{port}",
    "[::1]:{port}",
    "[::ffff:127.0.0.1]:{port}",
]
HOSTS_REFUSED = {  # Host header value -> status
    "attacker.example": 421,
    "attacker.example:{port}": 421,
    "ATTACKER.EXAMPLE.:{port}": 421,
    "localhost.attacker.example:{port}": 421,
    "127.0.0.1.attacker.example": 421,
    "127.0.0.1.nip.io:{port}": 421,
    "2130706433:{port}": 421,
    "127.1:{port}": 421,
    "attacker.example@127.0.0.1:{port}": 400,
    "127.0.0.1:{port}@attacker.example": 400,
    "::1": 400,
    "[::1": 400,
    "[fe80::1%25eth0]:{port}": 400,
    "localhost:99999": 400,
    "localhost:0": 400,
    "local host": 400,
    "": 400,
}


def test_dns_rebinding_host_names_are_refused(keyless: GuardedServer) -> None:
    api = Api(keyless.url)
    run = api.post("/v1/runs", {"agent": "gated", "input": "secret-task"}).json()["id"]
    call = wait_status(api, run, "input_required")["pending_approvals"][0]["call_id"]
    approve = json.dumps({"decision": "approve"}).encode()
    leaks, tried, held = [], 0, 0

    def attempt(head: str, body: bytes = b"") -> int:
        nonlocal tried
        tried += 1
        status, reply = _request(keyless.port, head, body)
        if run.encode() in reply or b"secret-task" in reply:
            leaks.append(head)
        return status

    for host in HOSTS_SERVED:
        assert attempt(f"GET /v1/agents HTTP/1.1\r\nHost: {host}") == 200, host
    for host, expected in HOSTS_REFUSED.items():
        listing = attempt(f"GET /v1/runs HTTP/1.1\r\nHost: {host}")
        decision = attempt(
            f"POST /v1/runs/{run}/approvals/{call} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nOrigin: http://attacker.example",
            approve,
        )
        assert (listing, decision) == (expected, expected), host
        held += 2
    get = "GET /v1/runs HTTP/1.1\r\n"
    others = {
        "absolute-form target": "GET http://attacker.example/v1/runs HTTP/1.1\r\nHost: localhost",
        "absolute-form to us": f"GET http://127.0.0.1:{keyless.port}/v1/runs HTTP/1.1\r\n"
        "Host: 127.0.0.1",
        "no Host (HTTP/1.0)": "GET /v1/runs HTTP/1.0",
        "no Host (HTTP/1.1)": "GET /v1/runs HTTP/1.1",
        "two Hosts": get + "Host: 127.0.0.1\r\nHost: attacker.example",
        "X-Forwarded-Host": get + "Host: 127.0.0.1\r\nX-Forwarded-Host: attacker.example",
        "X-Forwarded-Host list": get
        + "Host: 127.0.0.1\r\nX-Forwarded-Host: localhost, attacker.example",
        "Forwarded host=": get
        + 'Host: 127.0.0.1\r\nForwarded: for=1.2.3.4;host="attacker.example"',
        "forwarded localhost, Host attacker": get
        + "Host: attacker.example\r\nX-Forwarded-Host: localhost",
    }
    for name, head in others.items():
        assert attempt(head) in (400, 421), name
        held += 1
    assert leaks == []
    assert wait_status(api, run, "input_required")["pending_approvals"]  # nothing approved
    api.post(f"/v1/runs/{run}/cancel", headers={"Content-Type": "application/json"})
    figure(
        f"DNS rebinding: {len(HOSTS_REFUSED)} hostile Host values x 2 routes + "
        f"{len(others)} target/forwarding variants = {tried - len(HOSTS_SERVED)} requests, "
        f"{held} refused, leaks {len(leaks)}, approvals 0; {len(HOSTS_SERVED)} spellings of "
        "loopback served"
    )


CROSS_SITE = {  # extra headers of a POST /v1/runs with a JSON body -> expected status
    "text/plain (a form or simple fetch)": ("Content-Type: text/plain", 415),
    "form-urlencoded": ("Content-Type: application/x-www-form-urlencoded", 415),
    "multipart": ("Content-Type: multipart/form-data; boundary=x", 415),
    "no content type": ("", 415),
    "json-looking type": ("Content-Type: application/jsonx", 415),
    "type list": ("Content-Type: text/plain, application/json", 415),
    "Origin of another site": (
        "Content-Type: application/json\r\nOrigin: http://attacker.example",
        403,
    ),
    "Origin null": ("Content-Type: application/json\r\nOrigin: null", 403),
    "Origin same host, other port": (
        "Content-Type: application/json\r\nOrigin: http://127.0.0.1:1",
        403,
    ),
    "Origin https": ("Content-Type: application/json\r\nOrigin: https://127.0.0.1:{port}", 403),
    "Origin localhost:3000": (
        "Content-Type: application/json\r\nOrigin: http://localhost:3000",
        403,
    ),
    "Sec-Fetch-Site cross-site": (
        "Content-Type: application/json\r\nSec-Fetch-Site: cross-site",
        403,
    ),
    "Sec-Fetch-Site same-site": (
        "Content-Type: application/json\r\nSec-Fetch-Site: same-site",
        403,
    ),
    "Origin garbage": ("Content-Type: application/json\r\nOrigin: http://[::1", 403),
}


def test_cross_site_requests_change_nothing_on_a_keyless_server(keyless: GuardedServer) -> None:
    api = Api(keyless.url)
    before = len(api.get("/v1/runs?limit=200").json()["data"])
    body = json.dumps({"agent": "counting", "input": "csrf"}).encode()
    for name, (extra, expected) in CROSS_SITE.items():
        head = "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}" + (
            f"\r\n{extra}" if extra else ""
        )
        status, reply = _request(keyless.port, head, body)
        assert status == expected, (name, reply[:300])
        assert b"access-control-allow" not in reply.lower()
    # Bodiless POSTs (cancel) need the type too; DELETE needs a same-site origin.
    run = api.post("/v1/runs", {"agent": "slow", "input": "keep going"}).json()["id"]
    cancel = f"POST /v1/runs/{run}/cancel HTTP/1.1\r\nHost: 127.0.0.1:{{port}}"
    assert _request(keyless.port, cancel)[0] == 415
    assert _request(keyless.port, cancel + "\r\nSec-Fetch-Site: cross-site")[0] == 403
    delete = (
        "DELETE /v1/memories/m1?agent=x HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.test"
    )
    assert _request(keyless.port, delete)[0] == 403
    assert len(api.get("/v1/runs?limit=200").json()["data"]) == before + 1  # only `slow`
    assert api.get(f"/v1/runs/{run}").json()["status"] in ("queued", "in_progress")
    # What a same-origin page, the CLI and curl send still works.
    allowed = [
        "Content-Type: application/json",
        "Content-Type: application/json; charset=utf-8",
        "Content-Type: application/json\r\nOrigin: http://127.0.0.1:{port}",
        "Content-Type: application/json\r\nOrigin: http://localhost:{port}\r\n"
        "Sec-Fetch-Site: same-origin",
        "Content-Type: application/json\r\nSec-Fetch-Site: none",
    ]
    for extra in allowed:
        host = "localhost:{port}" if "localhost" in extra else "127.0.0.1:{port}"
        status, reply = _request(
            keyless.port, f"POST /v1/runs HTTP/1.1\r\nHost: {host}\r\n{extra}", body
        )
        assert status == 202, (extra, reply[:300])
    assert (
        _request(
            keyless.port,
            cancel.replace("{{port}}", "{port}") + "\r\nContent-Type: application/json",
        )[0]
        == 200
    )
    figure(
        f"CSRF on a keyless server: {len(CROSS_SITE) + 3} cross-site variants refused "
        f"(runs created 0, cancelled 0); {len(allowed)} same-origin/CLI forms accepted"
    )


# -- Idempotency-Key bound to its request -----------------------------------------------


def test_an_idempotency_key_is_bound_to_its_request(keyless: GuardedServer) -> None:
    api = Api(keyless.url)
    base = {"agent": "counting", "input": "charge order 42", "metadata": {"a": 1, "b": "x"}}
    key = {"Idempotency-Key": "order-42-charge"}
    first = api.post("/v1/runs", base, headers=key)
    assert first.status == 202
    run = first.json()["id"]
    same = {  # the same request, spelled differently
        "same body": json.dumps(base).encode(),
        "keys reordered": json.dumps(dict(reversed(list(base.items())))).encode(),
        "metadata reordered": json.dumps({**base, "metadata": {"b": "x", "a": 1}}).encode(),
        "other whitespace": json.dumps(base, indent=4).encode(),
        "escaped text": json.dumps(base, ensure_ascii=True).replace("c", "\\u0063", 1).encode(),
    }
    for name, raw_body in same.items():
        reply = api.post("/v1/runs", raw=raw_body, headers=key)
        assert (reply.status, reply.json()["id"]) == (202, run), name
    different = {
        "other input": {**base, "input": "charge order 43"},
        "other agent": {**base, "agent": "slow"},
        "other metadata value": {**base, "metadata": {"a": 2, "b": "x"}},
        "metadata added": {**base, "metadata": {**base["metadata"], "c": True}},
        "metadata dropped": {k: v for k, v in base.items() if k != "metadata"},
        "model added": {**base, "model": "openai:gpt-4.1"},
        "budget added": {**base, "budget": {"max_tool_calls": 1}},
        "memory key added": {**base, "metadata": {**base["metadata"], "memory_key": "t"}},
        "1 vs true": {**base, "metadata": {"a": True, "b": "x"}},
        "trailing space": {**base, "input": "charge order 42 "},
    }
    held = 0
    for name, body in different.items():
        reply = api.post("/v1/runs", body, headers=key)
        assert reply.status == 422, (name, reply.status)
        error = reply.json()["error"]
        assert error["code"] == "idempotency_key_reused" and run not in reply.body.decode()
        assert "\n" not in error["message"]
        held += 1

    # Many bodies with one fresh key at once: one run; its own body gets it, others 422.
    bodies = [{**base, "input": f"burst {i % 4}"} for i in range(24)]

    def post(body: dict[str, object]) -> tuple[int, str | None, str]:
        reply = api.post("/v1/runs", body, headers={"Idempotency-Key": "burst-key"})
        return reply.status, reply.json().get("id"), str(body["input"])

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, bodies))
    created = {r for s, r, _ in answers if s == 202}
    winners = {i for s, _, i in answers if s == 202}
    assert len(created) == 1 and len(winners) == 1
    assert all(s == 422 for s, _, i in answers if i not in winners)
    figure(
        f"Idempotency-Key reuse: {len(same)} spellings of the same body -> the same run, "
        f"{len(different)} different bodies -> 422 ({held} held); 24 concurrent posts of 4 "
        f"bodies with one key -> runs created {len(created)}"
    )


# -- loopwise serve: the options of these defences --------------------------------------


def _status(url: str, path: str, *, host: str | None = None, key: str | None = None) -> int:
    port = int(url.rsplit(":", 1)[1])
    head = f"GET {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}"
    if key:
        head += f"\r\nAuthorization: Bearer {key}"
    return _request(port, head)[0]


def test_serve_options_for_hosts_keys_and_keyless_use(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nname = "ops"\nkey = "ops-key-0123456789abcdef"\nadmin = true\n')
    proc, url = _serve_process(
        tmp_path, "--keys-file", str(keys), "--allowed-host", "api.test", "--host", "127.0.0.1"
    )
    try:
        assert _status(url, "/v1/runs") == 401
        assert _status(url, "/v1/runs", key="ops-key-0123456789abcdef") == 200
        assert _status(url, "/v1/runs", host="api.test", key="ops-key-0123456789abcdef") == 200
        assert _status(url, "/v1/runs", host="API.TEST.", key="ops-key-0123456789abcdef") == 200
        assert _status(url, "/v1/runs", host="evil.test", key="ops-key-0123456789abcdef") == 421
        assert _status(url, "/healthz", host="evil.test") == 421
        assert not (tmp_path / "data" / "local_api_key").exists()  # configured keys: no other
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    proc, url = _serve_process(open_dir, "--no-auth")
    try:
        assert _status(url, "/v1/runs") == 200
        assert _status(url, "/v1/runs", host="attacker.example") == 421
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"agent": "counting", "input": "x"}).encode()
        form = "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain"
        assert _request(port, form, body)[0] == 415
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    announced = (open_dir / "announced.txt").read_text()
    assert "no API key needed (--no-auth): any local user or process" in announced
    assert "Traceback" not in (open_dir / "serve.log").read_text()
