"""Wakeups for event streams: a watcher sleeps until its run has a new event.

One :class:`Hub` per database in a process fans wakeups out to its watchers
(:class:`Subscription`), whatever their number:

- PostgreSQL: a trigger on ``loopwise_events`` sends ``NOTIFY loopwise_events, '<run id>'``
  at commit, from any process; one thread per process LISTENs on one connection. A grouped
  check every :data:`PG_CHECK_SECONDS` covers a lost connection.
- SQLite: writes made in this process wake watchers as they commit (the store's engine is
  instrumented: inserts into ``loopwise_events`` are noted, published at check-in). Writes
  from *other* processes are found by a slow poll: every :data:`SQLITE_POLL_SECONDS` the
  thread stats the database and its WAL, and only if they changed runs one grouped query
  for every watched run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .schema import events

if TYPE_CHECKING:  # store.py may import these tables: no import cycle
    from .store import Store

__all__ = ["CHANNEL", "Hub", "Subscription", "hub_for", "instrument", "publish"]

logger = logging.getLogger("loopwise.durable")

CHANNEL = "loopwise_events"
SQLITE_POLL_SECONDS = 1.0
PG_CHECK_SECONDS = 10.0
_NOTED = "loopwise_new_events"
_CHUNK = 500

_TRIGGER_SQL = (
    "CREATE OR REPLACE FUNCTION loopwise_notify_event() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN PERFORM pg_notify('{CHANNEL}', NEW.run_id); RETURN NULL; END $$",
    "CREATE OR REPLACE TRIGGER loopwise_events_notify AFTER INSERT ON loopwise_events "
    "FOR EACH ROW EXECUTE FUNCTION loopwise_notify_event()",
)


class Subscription:
    """One watcher of one run, on the event loop that created it."""

    def __init__(self, hub: Hub, run_id: str, after: int):
        self.hub = hub
        self.run_id = run_id
        self.after = after
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def wake(self) -> None:
        """Wake the watcher (from any thread)."""
        if self._loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._event.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, seconds: float) -> bool:
        """Whether a wakeup came within ``seconds``."""
        if self._event.is_set():
            return True
        try:
            await asyncio.wait_for(self._event.wait(), max(seconds, 0.0))
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.hub.unsubscribe(self)


class Hub:
    """The watchers of one database in this process, and the thread that wakes them."""

    def __init__(self, store: Store):
        self.url = store.url
        self.engine: sa.Engine = getattr(store.engine, "raw", store.engine)
        self.is_sqlite = store.is_sqlite
        self._subs: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.wakeups = 0

    @property
    def watchers(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def subscribe(self, run_id: str, after: int) -> Subscription:
        sub = Subscription(self, run_id, after)
        with self._lock:
            self._subs.setdefault(run_id, set()).add(sub)
            if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
                self._stop = threading.Event()
                target = self._poll if self.is_sqlite else self._listen
                self._thread = threading.Thread(
                    target=target, args=(self._stop,), name="loopwise-notify", daemon=True
                )
                self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.run_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.run_id]
            if not self._subs:
                self._stop.set()

    def publish(self, run_ids: Iterable[str]) -> None:
        """Wake the watchers of these runs (from any thread)."""
        with self._lock:
            found = [s for r in set(run_ids) for s in self._subs.get(r, ())]
        self.wakeups += len(found)
        for sub in found:
            sub.wake()

    def wake_all(self) -> None:
        with self._lock:
            runs = list(self._subs)
        self.publish(runs)

    def check(self) -> None:
        """One grouped query: wake the watchers whose run has events after theirs."""
        with self._lock:
            after = {r: min(s.after for s in subs) for r, subs in self._subs.items() if subs}
        ids = list(after)
        newer: list[str] = []
        for start in range(0, len(ids), _CHUNK):
            query = (
                sa.select(events.c.run_id, sa.func.max(events.c.seq))
                .where(events.c.run_id.in_(ids[start : start + _CHUNK]))
                .group_by(events.c.run_id)
            )
            with self.engine.connect() as conn:
                newer += [r for r, top in conn.execute(query) if top is not None and top > after[r]]
        if newer:
            self.publish(newer)

    # -- SQLite: a slow poll, gated on the files changing --------------------------------

    def _poll(self, stop: threading.Event) -> None:
        seen: object = None
        while not stop.wait(SQLITE_POLL_SECONDS):
            now = self._signature()
            if now is not None and now == seen:
                continue
            seen = now
            try:
                self.check()
            except Exception:
                logger.warning("could not check for new events", exc_info=True)

    def _signature(self) -> tuple[int, ...] | None:
        path = self.url.removeprefix("sqlite:///")
        out: list[int] = []
        for name in (path, path + "-wal"):
            try:
                st = os.stat(name)
            except OSError:
                out += [0, 0]
                continue
            out += [st.st_mtime_ns, st.st_size]
        return tuple(out) if Path(path).is_absolute() else None

    # -- PostgreSQL: LISTEN on one connection -----------------------------------------

    def _listen(self, stop: threading.Event) -> None:
        import psycopg

        conninfo = sa.make_url(self.url).set(drivername="postgresql")
        while not stop.is_set():
            try:
                with psycopg.connect(
                    conninfo.render_as_string(hide_password=False), autocommit=True
                ) as conn:
                    _install_trigger(conn)
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.wake_all()  # whatever was written before LISTEN took effect
                    self._receive(conn, stop)
            except Exception:
                logger.warning("the event listener lost its connection; retrying", exc_info=True)
                stop.wait(1.0)

    def _receive(self, conn: Any, stop: threading.Event) -> None:
        checked = time.monotonic()
        while not stop.is_set():
            for note in conn.notifies(timeout=0.5):
                self.publish([note.payload])
            if time.monotonic() - checked >= PG_CHECK_SECONDS:
                self.check()
                checked = time.monotonic()


def _install_trigger(conn: Any) -> None:
    """The NOTIFY trigger on loopwise_events, created once (under an advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('loopwise_events_notify'))")
        found = conn.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = 'loopwise_events_notify' "
            "AND tgrelid = 'loopwise_events'::regclass"
        ).fetchone()
        if found is None:
            for statement in _TRIGGER_SQL:
                conn.execute(statement)


# -- the hubs of this process ----------------------------------------------------------

_hubs: dict[str, Hub] = {}
_hubs_lock = threading.Lock()
_instrumented: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def hub_for(store: Store) -> Hub:
    """This process's hub for the store's database (its engine is instrumented)."""
    instrument(store)
    with _hubs_lock:
        hub = _hubs.get(store.url)
        if hub is None:
            hub = _hubs[store.url] = Hub(store)
        return hub


def publish(url: str, run_ids: Iterable[str]) -> None:
    hub = _hubs.get(url)
    if hub is not None:
        hub.publish(run_ids)


def instrument(store: Store) -> None:
    """Publish, as they commit, the events that this process inserts through the store's
    engine (SQLite only: on PostgreSQL the trigger notifies every process)."""
    engine: sa.Engine = getattr(store.engine, "raw", store.engine)
    if not store.is_sqlite or engine in _instrumented:
        return
    _instrumented.add(engine)
    url = store.url
    sa.event.listen(engine, "after_cursor_execute", _noted)
    sa.event.listen(engine, "rollback", _dropped)

    def checked_in(_dbapi: Any, record: Any) -> None:
        ids = record.info.pop(_NOTED, None)
        if ids:
            publish(url, ids)

    sa.event.listen(engine.pool, "checkin", checked_in)


def _noted(
    conn: sa.Connection,
    _cursor: Any,
    _statement: str,
    _params: Any,
    context: Any,
    _many: bool,
) -> None:
    if context is None or not context.isinsert:
        return
    table = getattr(getattr(context.compiled, "statement", None), "table", None)
    if getattr(table, "name", None) != events.name:
        return
    ids = {p.get("run_id") for p in context.compiled_parameters or ()}
    conn.info.setdefault(_NOTED, set()).update(i for i in ids if isinstance(i, str))


def _dropped(conn: sa.Connection) -> None:
    conn.info.pop(_NOTED, None)
