"""The HTTP service under attack: slowloris and connection floods, DNS rebinding and CSRF,
Idempotency-Key reuse. Real sockets against uvicorn on 127.0.0.1 (in a thread, or a real
``loopwise serve`` process); each class is attacked with several variants."""

from __future__ import annotations

import asyncio
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
        with Slowloris(port, 1000, 100) as attack:
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
        f"slowloris on loopwise serve (fd limit 1024, 3 s deadlines): 1000 dripping heads + "
        f"100 dripping bodies, reconnecting; /healthz {len(latencies) - failures}/"
        f"{len(latencies)} answered within 1 s (slowest {max(latencies) * 1000:.0f} ms); "
        f"{len(cut)} head and {len(bodies)} body connections cut, longest lived "
        f"{max(cut + bodies):.1f} s"
    )
    assert failures == 0 and len(latencies) >= 20
    assert len(cut) >= 1000 and len(bodies) >= 100
    assert max(cut + bodies) < 3 + 1.5
