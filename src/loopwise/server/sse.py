"""Server-sent events of a run: stored events in order, resumable, with heartbeats.

Each event goes out as ``id: <seq>`` / ``event: <type>`` / ``data: <json>``. A stream reads
the events after the last one sent, then sleeps until its run has a new one: a wakeup from
the database's hub (:mod:`loopwise.durable.notify`: LISTEN/NOTIFY on PostgreSQL; on SQLite
this process's own writes at once, other processes' within about a second). An idle
watcher costs nothing but a ``: ping`` comment every ``heartbeat_seconds`` and a check
every :data:`RECHECK_SECONDS`. Watchers of one run woken together share one query. The
stream ends once the run is in a terminal state and every event has been sent.

Engines without a store (no hub) are polled every ``poll_seconds``. Each API key may hold
at most ``max_streams_per_key`` streams at once (:class:`StreamLimits`); beyond it: 429.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..durable.records import TERMINAL, NotFound, RunRecord, StoredEvent
from .errors import ApiError

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..durable.notify import Hub, Subscription
    from .app import RunEngine

__all__ = [
    "BATCH",
    "DEFAULT_MAX_STREAMS_PER_KEY",
    "RECHECK_SECONDS",
    "StreamLimits",
    "StreamSlot",
    "event_stream",
    "format_event",
    "open_stream_slot",
]

logger = logging.getLogger("loopwise.server")

BATCH = 500
RECHECK_SECONDS = 60.0
DEFAULT_MAX_STREAMS_PER_KEY = 64
_RETRY_MS = 1000
T = TypeVar("T")


def format_event(event: StoredEvent) -> bytes:
    """One event in the SSE wire format (JSON has no raw newlines, so ``data`` is one line)."""
    kind = " ".join(event.type.split())
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.seq}\nevent: {kind}\ndata: {data}\n\n".encode()


def event_stream(
    engine: RunEngine,
    run_id: str,
    *,
    after: int,
    heartbeat_seconds: float,
    poll_seconds: float,
    max_seconds: float = float("inf"),
    follow: bool = True,
    slot: StreamSlot | None = None,
) -> AsyncIterator[bytes]:
    """The bytes of the stream, from the event after ``after`` until the run is over
    (without ``follow``: until the events stored so far are sent), or ``max_seconds``.
    ``slot`` is released when the stream ends, or when it is dropped without starting."""
    stream = _stream(
        engine, run_id, after, heartbeat_seconds, poll_seconds, max_seconds, follow, slot
    )
    if slot is not None:
        weakref.finalize(stream, slot.release)
    return stream


async def _stream(
    engine: RunEngine,
    run_id: str,
    after: int,
    heartbeat_seconds: float,
    poll_seconds: float,
    max_seconds: float,
    follow: bool,
    slot: StreamSlot | None,
) -> AsyncIterator[bytes]:
    hub = _hub(engine) if follow else None
    sub = hub.subscribe(run_id, after) if hub is not None else None
    try:
        yield f"retry: {_RETRY_MS}\n\n".encode()
        async for chunk in _follow(
            engine, run_id, after, sub, heartbeat_seconds, poll_seconds, max_seconds, follow
        ):
            yield chunk
    finally:
        if sub is not None:
            sub.close()
        if slot is not None:
            slot.release()


@dataclass(slots=True)
class _Clock:
    """When the stream started, last sent something, and last read the database."""

    started: float
    quiet_since: float
    checked: float

    def left(self, max_seconds: float) -> float:
        return max_seconds - (time.monotonic() - self.started)


async def _follow(
    engine: RunEngine,
    run_id: str,
    after: int,
    sub: Subscription | None,
    heartbeat_seconds: float,
    poll_seconds: float,
    max_seconds: float,
    follow: bool,
) -> AsyncIterator[bytes]:
    now = time.monotonic()
    clock = _Clock(now, now, now)
    while clock.left(max_seconds) > 0:
        if sub is not None:
            sub.clear()  # a wakeup from here on is not lost
        events = await _fetch(engine, run_id, after, follow)
        if events is None:
            return
        clock.checked = time.monotonic()
        for event in events:
            yield format_event(event)
            after = event.seq
            await asyncio.sleep(0)  # let a disconnect be noticed between writes
        if sub is not None:
            sub.after = after
        if events:  # read again at once: more, or nothing new and the run's status
            clock.quiet_since = time.monotonic()
            continue
        async for ping in _idle(sub, clock, heartbeat_seconds, poll_seconds, max_seconds):
            yield ping


async def _idle(
    sub: Subscription | None,
    clock: _Clock,
    heartbeat_seconds: float,
    poll_seconds: float,
    max_seconds: float,
) -> AsyncIterator[bytes]:
    """Sleep until it is time to read again (a wakeup, a recheck, or the next poll without
    a hub), writing a ping whenever the stream has been quiet for ``heartbeat_seconds``."""
    while clock.left(max_seconds) > 0:
        now = time.monotonic()
        if now - clock.quiet_since >= heartbeat_seconds:
            yield b": ping\n\n"
            clock.quiet_since = now
        if sub is None:
            await asyncio.sleep(poll_seconds)
            return
        wait = min(
            heartbeat_seconds - (now - clock.quiet_since),
            RECHECK_SECONDS - (now - clock.checked),
            clock.left(max_seconds),
        )
        if await sub.wait(max(wait, 0.01)) or time.monotonic() - clock.checked >= RECHECK_SECONDS:
            return


async def _fetch(
    engine: RunEngine, run_id: str, after: int, follow: bool
) -> Sequence[StoredEvent] | None:
    """The next events; None when the stream should end (the run is over and sent, it is
    gone, or reading failed: the client reconnects)."""
    try:
        events = await _shared(engine, ("events", run_id, after), _events(engine, run_id, after))
        if events or not follow:
            return events or None
        run: RunRecord = await _shared(engine, ("get", run_id), lambda: engine.get(run_id))
        if run.status not in TERMINAL:
            return []
        events = await engine.events(run_id, after=after, limit=BATCH)
        return events or None
    except NotFound:
        return None  # pruned while we watched
    except Exception:  # the status line is sent: end the stream; the client reconnects
        logger.exception("the event stream of run %s failed", run_id)
        return None


def _events(
    engine: RunEngine, run_id: str, after: int
) -> Callable[[], Awaitable[list[StoredEvent]]]:
    return lambda: engine.events(run_id, after=after, limit=BATCH)


_flights: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], asyncio.Future[Any]]] = (
    weakref.WeakKeyDictionary()
)


async def _shared(engine: Any, key: tuple[Any, ...], read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, shared by the streams that ask for the same thing at the same time."""
    loop = asyncio.get_running_loop()
    try:
        flights = _flights.setdefault(loop, {})
    except TypeError:  # pragma: no cover - a loop that cannot be weakly referenced
        return await read()
    full = (id(engine), *key)
    flight = flights.get(full)
    if flight is None:
        flight = asyncio.ensure_future(read())
        flights[full] = flight
        flight.add_done_callback(lambda f: _landed(flights, full, f))
    result: T = await asyncio.shield(flight)
    return result


def _landed(
    flights: dict[tuple[Any, ...], asyncio.Future[Any]], key: tuple[Any, ...], f: Any
) -> None:
    flights.pop(key, None)
    if not f.cancelled():
        f.exception()  # retrieved: every reader may have gone


def _hub(engine: RunEngine) -> Hub | None:
    """The notification hub of the engine's database, if it has one."""
    try:
        store = getattr(engine, "store", None)
    except Exception:  # an engine that is not started
        return None
    if store is None or not hasattr(store, "url") or not hasattr(store, "engine"):
        return None
    from ..durable.notify import hub_for

    return hub_for(store)


# -- how many streams a key may hold -------------------------------------------------------


class StreamSlot:
    """One open stream, counted against its key until released (idempotent)."""

    def __init__(self, limits: StreamLimits, principal: str):
        self._limits = limits
        self.principal = principal
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limits._release(self.principal)


class StreamLimits:
    """Open event streams per principal (an API key, or the keyless caller)."""

    def __init__(self, max_per_key: int):
        if max_per_key < 1:
            raise ValueError(f"max_streams_per_key must be at least 1, not {max_per_key}.")
        self.max_per_key = max_per_key
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, principal: str) -> StreamSlot:
        """A slot for one more stream; :class:`ApiError` 429 beyond the cap."""
        with self._lock:
            held = self._open.get(principal, 0)
            if held >= self.max_per_key:
                raise ApiError(
                    429,
                    "too_many_requests",
                    f"This key already has {held} event streams open (the limit is "
                    f"{self.max_per_key}); close one before opening another.",
                    {"Retry-After": "1"},
                )
            self._open[principal] = held + 1
        return StreamSlot(self, principal)

    def counts(self) -> dict[str, int]:
        """Open streams by principal."""
        with self._lock:
            return dict(self._open)

    def _release(self, principal: str) -> None:
        with self._lock:
            left = self._open.get(principal, 0) - 1
            if left > 0:
                self._open[principal] = left
            else:
                self._open.pop(principal, None)


def principal_of(request: Request) -> str:
    """Who holds a stream: the request's principal if auth set one, else its key's hash."""
    state = getattr(request, "state", None)
    principal = getattr(state, "principal", None) if state is not None else None
    if principal is not None:
        return f"principal:{getattr(principal, 'id', principal)}"
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return "key:" + hashlib.sha256(key.strip().encode()).hexdigest()
    return "anonymous"


def open_stream_slot(request: Request) -> StreamSlot:
    """Count one more stream for the caller (429 beyond the app's ``max_streams_per_key``)."""
    app = request.app
    limits: StreamLimits | None = getattr(app.state, "stream_limits", None)
    if limits is None:
        settings = getattr(app.state, "settings", None)
        cap = getattr(settings, "max_streams_per_key", DEFAULT_MAX_STREAMS_PER_KEY)
        limits = StreamLimits(cap)
        app.state.stream_limits = limits
    return limits.acquire(principal_of(request))
