"""Executor ids, heartbeats, and taking over the runs of a dead executor.

DBOS recovers a process's unfinished workflows only when a process with the *same*
executor id starts again; a machine that never comes back leaves them pending. So each
worker writes a heartbeat, and a supervisor in every worker claims executors whose
heartbeat is stale (one conditional update: one survivor wins) and re-enqueues their
pending workflows, which then finish on live workers.

Default executor ids are ``<hostname>-<n>``, ``n`` the lowest slot whose lock file under
``<data dir>/executors`` this process can lock: stable across restarts (a restarted
worker recovers its own runs at once) and distinct for workers sharing a machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from ..datadir import data_dir
from ..errors import UsageError
from .schema import executors
from .store import Store

__all__ = ["ExecutorSlot", "Heartbeat", "check_executor_free", "supervise"]

logger = logging.getLogger("loopwise.durable")


class ExecutorSlot:
    """A default executor id held through a lock file for as long as this process runs."""

    def __init__(self, executor_id: str, handle: IO[str]):
        self.executor_id = executor_id
        self._handle = handle

    @classmethod
    def claim(cls, directory: Path | None = None, *, limit: int = 256) -> ExecutorSlot:
        folder = directory or data_dir(create=True) / "executors"
        folder.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for n in range(limit):
            handle = open(folder / f"{host}-{n}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            return cls(f"{host}-{n}", handle)
        raise UsageError(f"All {limit} executor slots under {folder} are taken; pass executor_id.")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def check_executor_free(store: Store, executor_id: str, dead_after: float) -> None:
    """Refuse an executor id that a live process elsewhere still heartbeats under."""
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(executors).where(executors.c.executor_id == executor_id)
        ).first()
    if row is None or row.heartbeat_at < time.time() - dead_after:
        return
    here = socket.gethostname()
    if row.hostname == here and (row.pid == os.getpid() or not _alive(row.pid)):
        return
    raise UsageError(
        f"Executor id {executor_id!r} is in use by process {row.pid} on {row.hostname} "
        f"(heartbeat {time.time() - row.heartbeat_at:.1f} s ago); give this process another "
        "executor id, or stop that one first."
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Heartbeat:
    """Writes this executor's heartbeat every ``interval`` seconds from its own thread (so a
    busy event loop does not make a live worker look dead)."""

    def __init__(self, store: Store, executor_id: str, interval: float):
        self.store = store
        self.executor_id = executor_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopwise-heartbeat", daemon=True)

    def beat(self) -> None:
        now = time.time()
        values = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat_at": now,
            "claimed_by": None,
            "claimed_at": None,
        }
        with self.store.engine.begin() as conn:
            done = conn.execute(
                sa.update(executors)
                .where(executors.c.executor_id == self.executor_id)
                .values(**values)
            )
            if done.rowcount == 0:
                insert = self.store.insert(executors).values(executor_id=self.executor_id, **values)
                conn.execute(insert.on_conflict_do_nothing())

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                logger.warning("heartbeat of executor %s failed", self.executor_id, exc_info=True)

    def stop(self, *, retire: bool) -> None:
        """Stop beating; ``retire`` marks this executor dead at once, so a survivor takes
        its remaining runs without waiting."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if retire:
            with self.store.engine.begin() as conn:
                conn.execute(
                    sa.update(executors)
                    .where(executors.c.executor_id == self.executor_id)
                    .values(heartbeat_at=0.0)
                )


def claim_dead(store: Store, me: str, dead_after: float) -> list[str]:
    """Executors whose heartbeat is stale, each claimed by this one conditionally (so only
    one survivor takes over each); an unfinished claim expires like a heartbeat."""
    now = time.time()
    cutoff = now - dead_after
    fresh_claim = sa.or_(executors.c.claimed_by.is_(None), executors.c.claimed_at < cutoff)
    claimed: list[str] = []
    with store.engine.connect() as conn:
        stale = conn.execute(
            sa.select(executors.c.executor_id, executors.c.heartbeat_at).where(
                executors.c.executor_id != me, executors.c.heartbeat_at < cutoff, fresh_claim
            )
        ).all()
    for dead, seen in stale:
        with store.engine.begin() as conn:
            done = conn.execute(
                sa.update(executors)
                .where(
                    executors.c.executor_id == dead, executors.c.heartbeat_at == seen, fresh_claim
                )
                .values(claimed_by=me, claimed_at=now)
            )
        if done.rowcount == 1:
            claimed.append(dead)
    return claimed


def release(store: Store, dead: str, me: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.delete(executors).where(
                executors.c.executor_id == dead, executors.c.claimed_by == me
            )
        )


TakeOver = Callable[[str], Coroutine[Any, Any, int]]


async def supervise(
    store: Store, me: str, *, interval: float, dead_after: float, take_over: TakeOver
) -> None:
    """Every ``interval`` seconds: claim dead executors and hand their runs to ``take_over``
    (which re-enqueues them and returns how many); runs until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            for dead in await asyncio.to_thread(claim_dead, store, me, dead_after):
                moved = await take_over(dead)
                await asyncio.to_thread(release, store, dead, me)
                logger.warning("executor %s is dead; %d of its runs were re-enqueued", dead, moved)
        except Exception:
            logger.warning("the takeover supervisor failed; it will try again", exc_info=True)
