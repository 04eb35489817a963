"""The real service for the attack tests: uvicorn over the guarded protocol in a thread, and
raw sockets that speak as much (or as little) HTTP as an attacker wants."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from loopwise.server import ServerSettings
from loopwise.server.limits import ConnectionLimits, uvicorn_config


class GuardedServer:
    """An ASGI app served like ``loopwise serve`` does (guarded h11 protocol, ``limits``)."""

    def __init__(self, app: Any, limits: ConnectionLimits, log_level: str = "warning") -> None:
        config = uvicorn_config(
            app,
            limits=limits,
            host="127.0.0.1",
            port=0,
            log_level=log_level,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GuardedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextlib.contextmanager
def guarded_service(
    directory: Path,
    limits: ConnectionLimits | None = None,
    *,
    workers: bool = True,
    **app_options: Any,
) -> Iterator[GuardedServer]:
    """DurableEngine on SQLite + create_app(**app_options) behind the guarded server (one
    engine with workers per process: DBOS's limit)."""
    from loopwise.durable import DurableEngine
    from loopwise.server import create_app
    from server_agents import agents

    engine = DurableEngine(
        app_options.pop("agents", agents),
        database=f"sqlite:///{directory / 'runs.sqlite'}",
        poll_seconds=0.05,
        workers=workers,
    )
    app_options.setdefault("require_auth", False)
    app_options.setdefault("settings", ServerSettings(heartbeat_seconds=0.2, poll_seconds=0.02))
    app = create_app(engine, **app_options)
    with GuardedServer(app, limits or ConnectionLimits()) as server:
        yield server


def raw(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_all(sock, timeout)


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    """The status code of a raw HTTP/1.1 reply (0 if there is none)."""
    line = reply.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection; never blocks."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True
