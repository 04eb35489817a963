"""Connection limits for ``loopwise serve``: uvicorn's h11 protocol with deadlines and a cap.

uvicorn closes idle keep-alive connections but gives a request that is still arriving all
the time it wants (slowloris), and ``limit_concurrency`` counts open connections, so
half-open ones make it answer 503 to everyone. :func:`guarded_protocol` adds what is
missing: a request's head must arrive within ``header_seconds`` of the connection being
ready for it and its body within ``body_seconds`` of the head (else 408 and the
connection is closed), and at most ``max_connections`` stay open: a new connection over
the cap pushes out the oldest one that is waiting for a request, so working clients and
/healthz still get in. A response (an event stream) may take as long as it needs.
"""

from __future__ import annotations

import asyncio
import json
import resource
import weakref
from dataclasses import dataclass, replace
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from ..errors import UsageError

__all__ = [
    "ConnectionLimits",
    "GuardedH11Protocol",
    "fit_to_descriptors",
    "guarded_protocol",
    "uvicorn_config",
]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many connections stay open."""

    header_seconds: float = 10.0
    body_seconds: float = 30.0
    keep_alive_seconds: int = 5
    max_connections: int = 1000
    max_header_bytes: int = 16 * 1024
    backlog: int = 2048
    """Connections the kernel queues for accepting (also how many are accepted at once)."""

    def __post_init__(self) -> None:
        if min(self.header_seconds, self.body_seconds, self.keep_alive_seconds) <= 0:
            raise UsageError("Connection timeouts must be positive.")
        if self.max_connections < 2 or self.max_header_bytes < 1024:
            raise UsageError("max_connections must be at least 2 and max_header_bytes 1024.")


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_FULL = _raw_response(
    503,
    "Service Unavailable",
    "too_many_connections",
    "The server has too many connections open; try again shortly.",
)

_waiting: weakref.WeakKeyDictionary[ServerState, dict[GuardedH11Protocol, None]] = (
    weakref.WeakKeyDictionary()
)
"""Per server, its connections waiting for a request head, oldest first."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with request deadlines and a connection cap (``limits``)."""

    limits = ConnectionLimits()

    def __init__(self, config: Config, server_state: ServerState, *args: Any, **kw: Any):
        super().__init__(config, server_state, *args, **kw)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "head" or "body" while a deadline runs
        self._queue = _waiting.setdefault(server_state, {})

    # -- connection lifetime -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.limits.max_connections and not self._shed():
            transport.write(_FULL)  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._review()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        self._queue.pop(self, None)
        if self.transport is not None:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._review()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._review()

    # -- deadlines ---------------------------------------------------------------------

    def _review(self) -> None:
        """Start, move or stop the deadline for what the client still has to send."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        busy = self.cycle is not None and not self.cycle.response_complete
        if state is h11.IDLE and not busy:
            self._queue[self] = None
            self._arm("head", self.limits.header_seconds)
            return
        self._queue.pop(self, None)
        if state is h11.SEND_BODY:
            self._arm("body", self.limits.body_seconds)
        else:
            self._stop()

    def _arm(self, phase: str, seconds: float) -> None:
        if self._phase == phase:
            return
        self._stop()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._phase = None

    def _expired(self) -> None:
        """The request did not arrive in time: 408 if no response started, then close."""
        what = "request head" if self._phase == "head" else "request body"
        seconds = self.limits.header_seconds if self._phase == "head" else self.limits.body_seconds
        self._deadline = None
        self._phase = None
        if self.transport.is_closing():
            return
        started = self.cycle is not None and self.cycle.response_started
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() ends; its send() is dropped
            self.cycle.message_event.set()
        if not started:
            message = f"The {what} did not arrive within {seconds:g} s; the connection is closed."
            self.transport.write(_raw_response(408, "Request Timeout", "request_timeout", message))
        self.transport.close()

    def _shed(self) -> bool:
        """Close the oldest connection waiting for a request; False when none is."""
        while self._queue:
            victim = next(iter(self._queue))
            del self._queue[victim]
            if victim.transport is not None and not victim.transport.is_closing():
                victim._stop()
                victim.transport.close()
                return True
        return False


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` class with these limits (give it to uvicorn as ``http``)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def fit_to_descriptors(limits: ConnectionLimits) -> ConnectionLimits:
    """Raise this process's open-file limit to its hard limit, and keep ``max_connections``
    below it with room for the database, logs and tools (a quarter, at least 128)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    spare = max(128, soft // 4)  # the database, logs, tools' pipes
    connections = max(2, min(limits.max_connections, soft - spare))
    # An accepted burst (up to the backlog at once) must fit too.
    backlog = max(16, min(limits.backlog, soft - connections - 128))
    return replace(limits, max_connections=connections, backlog=backlog)


def uvicorn_config(app: Any, *, limits: ConnectionLimits, **options: Any) -> Config:
    """A uvicorn ``Config`` serving ``app`` over the guarded h11 protocol under ``limits``.

    ``limit_concurrency`` is only a backstop above the cap (uvicorn counts open connections
    in it, so at the cap it would refuse every request; the cap sheds waiting connections
    instead). WebSockets are off: the API has none.
    """
    return Config(
        app,
        http=guarded_protocol(limits),
        ws="none",
        timeout_keep_alive=limits.keep_alive_seconds,
        limit_concurrency=limits.max_connections + 100,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        backlog=limits.backlog,
        **options,
    )
