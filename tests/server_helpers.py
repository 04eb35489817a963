"""A real uvicorn server in a thread, and a small urllib client for the service tests."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from loopwise.server import ServerSettings


class LiveServer:
    """Runs an ASGI app with uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app: Any, *, log_level: str = "warning") -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level=log_level, timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Frame:
    """One SSE message: id, event and data (parsed JSON), or a comment."""

    id: str | None = None
    event: str | None = None
    data: Any = None
    comment: str | None = None
    retry: int | None = None


@dataclass
class Api:
    url: str
    key: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        out = {"Accept": "application/json", **self.extra}
        if self.key is not None:
            out["Authorization"] = f"Bearer {self.key}"
        out.update(headers or {})
        return out

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = raw
        hdrs = self._headers(headers)
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return Reply(
                    resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
                )
        except urllib.error.HTTPError as err:
            return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def sse(
        self, path: str, *, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> Iterator[Frame]:
        """The frames of an event stream until the server closes it."""
        req = urllib.request.Request(
            self.url + path,
            headers=self._headers({"Accept": "text/event-stream", **(headers or {})}),
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            frame = Frame()
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if not line:
                    if frame != Frame():
                        yield frame
                    frame = Frame()
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    frame.comment = value
                elif name == "id":
                    frame.id = value
                elif name == "event":
                    frame.event = value
                elif name == "data":
                    frame.data = json.loads(value)
                elif name == "retry":
                    frame.retry = int(value)

    def events(self, run_id: str, query: str = "", **kw: Any) -> list[Frame]:
        """The run's events (no comments), following the stream to its end."""
        path = f"/v1/runs/{run_id}/events{query}"
        return [f for f in self.sse(path, **kw) if f.id is not None]


KEY = "test-key-0123456789abcdef"


@contextlib.contextmanager
def service(
    directory: Path,
    *,
    keys: list[str] | None = None,
    settings: ServerSettings | None = None,
    agents: dict[str, Any] | None = None,
    log_level: str = "warning",
    database: str | None = None,
) -> Iterator[LiveServer]:
    """The real stack: DurableEngine (on SQLite in ``directory`` unless ``database`` says
    otherwise) behind uvicorn on loopback."""
    from loopwise.durable import DurableEngine
    from loopwise.server import create_app
    from server_agents import agents as test_agents

    engine = DurableEngine(
        agents or test_agents,
        database=database or f"sqlite:///{directory / 'runs.sqlite'}",
        poll_seconds=0.05,
    )
    app = create_app(
        engine,
        api_keys=keys or [],
        require_auth=bool(keys),
        settings=settings or ServerSettings(heartbeat_seconds=0.2, poll_seconds=0.02),
    )
    with LiveServer(app, log_level=log_level) as server:
        yield server


def wait_for(check: Callable[[], Any], *, timeout: float = 20, what: str = "a condition") -> Any:
    """Poll ``check`` (a cheap HTTP read) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_status(api: Api, run_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run: dict[str, Any] = api.get(f"/v1/runs/{run_id}").json()
        return run if run["status"] in statuses else None

    found: dict[str, Any] = wait_for(
        check, timeout=timeout, what=f"run {run_id} to be {'/'.join(statuses)}"
    )
    return found
