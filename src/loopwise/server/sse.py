"""Server-sent events of a run: stored events in order, resumable, with heartbeats.

Each event goes out as ``id: <seq>`` / ``event: <type>`` / ``data: <json>``. The stream
polls the engine for events after the last one sent, writes a ``: ping`` comment when it
has been quiet for ``heartbeat_seconds``, and ends once the run is in a terminal state and
every event has been sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from ..durable.records import TERMINAL, NotFound, StoredEvent

if TYPE_CHECKING:
    from .app import RunEngine

__all__ = ["BATCH", "event_stream", "format_event"]

logger = logging.getLogger("loopwise.server")

BATCH = 500
_RETRY_MS = 1000


def format_event(event: StoredEvent) -> bytes:
    """One event in the SSE wire format (JSON has no raw newlines, so ``data`` is one line)."""
    kind = " ".join(event.type.split())
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.seq}\nevent: {kind}\ndata: {data}\n\n".encode()


async def event_stream(
    engine: RunEngine,
    run_id: str,
    *,
    after: int,
    heartbeat_seconds: float,
    poll_seconds: float,
    max_seconds: float = float("inf"),
    follow: bool = True,
) -> AsyncIterator[bytes]:
    """The bytes of the stream, from the event after ``after`` until the run is over
    (without ``follow``: until the events stored so far are sent), or ``max_seconds``."""
    yield f"retry: {_RETRY_MS}\n\n".encode()
    quiet_since = started = time.monotonic()
    while time.monotonic() - started < max_seconds:
        try:
            events: Sequence[StoredEvent] | None
            events = await engine.events(run_id, after=after, limit=BATCH)
            if not events:
                if not follow:
                    return
                events = await _last_events(engine, run_id, after)
                if events is None:
                    return
        except NotFound:
            return  # pruned while we watched
        except Exception:  # the status line is sent: end the stream; the client reconnects
            logger.exception("the event stream of run %s failed", run_id)
            return
        for event in events:
            yield format_event(event)
            after = event.seq
            await asyncio.sleep(0)  # let a disconnect be noticed between writes
        if events:
            quiet_since = time.monotonic()
            if len(events) == BATCH:
                continue
        elif time.monotonic() - quiet_since >= heartbeat_seconds:
            yield b": ping\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll_seconds)


async def _last_events(engine: RunEngine, run_id: str, after: int) -> Sequence[StoredEvent] | None:
    """Nothing new: None when the run is over (checked after its status, so none is missed)."""
    run = await engine.get(run_id)
    if run.status not in TERMINAL:
        return []
    events = await engine.events(run_id, after=after, limit=BATCH)
    return events or None
