"""Leases with fencing tokens: only the newest execution of a run may start steps or write.

DBOS runs a segment's workflow again when its worker looks dead (the takeover supervisor
re-enqueues it) or restarts. A worker that only *looked* dead (paused by SIGSTOP, a long
GC, a partition) wakes up still running the old execution. So each execution takes the
run's lease when it starts: ``epoch`` goes up by one in ``loopwise_leases`` (and the take
checks, in the same transaction, that DBOS still gives this execution the workflow). Every
write the execution makes then starts with a check of its epoch *in the same transaction*
(:class:`FencedEngine`), and so does every step before it starts; a stale execution finds a
newer epoch, raises :class:`LeaseLost` and stops: no further steps, no further writes.

A step that was already running when the lease was lost cannot be un-run. A per-process
:class:`LeaseWatcher` notices the loss within :data:`WATCH_SECONDS` of the process running
again and cancels the step; one that finishes first is not recorded (DBOS's own checkpoint
write is fenced by its ownership token, loopwise's by the epoch). A non-idempotent call that
finished that way leaves a *late result* (:func:`record_late`): the newer execution uses it
instead of running the call a second time, when it comes to that call after the late result
was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from dbos._error import DBOSWorkflowCancelledError

if TYPE_CHECKING:  # store.py may import these tables: no import cycle
    from .store import Store

__all__ = [
    "WATCH_SECONDS",
    "FencedEngine",
    "Lease",
    "LeaseLost",
    "LeaseWatcher",
    "create_tables",
    "fenced_store",
    "finish_attempt",
    "late_result",
    "record_late",
]

logger = logging.getLogger("loopwise.durable")

T = TypeVar("T")
WATCH_SECONDS = 1.0
"""How often a worker compares the epochs of the leases it holds with the database's."""
FRESH_SECONDS = 0.2
"""A check this recent (e.g. the write just before a step) also stands for the step's own
(the monotonic clock runs on while a process is stopped, so a SIGSTOP outlasts it)."""

metadata = sa.MetaData()

leases = sa.Table(
    "loopwise_leases",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("segment", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("taken_at", sa.Float, nullable=False),
)

# Results of non-idempotent calls that finished in an execution that had lost its lease.
late_results = sa.Table(
    "loopwise_late_results",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("call_id", sa.String(200), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("result", sa.JSON(none_as_null=True), nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
)


def create_tables(store: Store) -> None:
    """Create the lease tables if they are missing (idempotent, safe from many workers)."""
    try:
        metadata.create_all(store.engine)
    except sa.exc.DBAPIError:  # another worker created them at the same moment
        metadata.create_all(store.engine)


class LeaseLost(DBOSWorkflowCancelledError):
    """This execution no longer holds the run's lease: it must stop without writing.

    A subclass of DBOS's cancellation error, so a step that raises it is not checkpointed."""

    def __init__(self, run_id: str, epoch: int | None, why: str = "a newer execution took it"):
        super().__init__(run_id)
        self.run_id = run_id
        self.epoch = epoch
        self.why = why

    def __str__(self) -> str:
        return f"run {self.run_id} lost its lease (epoch {self.epoch}): {self.why}"


class Lease:
    """One execution's hold on a run: ``epoch`` once :meth:`take` succeeded."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        segment: int,
        owner: str,
        *,
        workflow_id: str | None = None,
        dbos_token: str | None = None,
    ):
        self.store = store
        self.run_id = run_id
        self.segment = segment
        self.owner = owner
        self.workflow_id = workflow_id
        self.dbos_token = dbos_token
        self.epoch: int | None = None
        self.lost: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._on_lost: list[Callable[[], None]] = []
        self._fresh_until = 0.0

    # -- taking and checking ---------------------------------------------------------------

    async def take(self) -> bool:
        """Take the lease (epoch + 1); False if DBOS has already given the workflow to a
        newer execution, which then holds it."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        try:
            self.epoch = await asyncio.to_thread(self._take)
        except LeaseLost as exc:
            self.lose(exc.why)
            return False
        return True

    def _take(self) -> int:
        now = time.time()
        values = {"segment": self.segment, "owner": self.owner, "taken_at": now}
        upsert = (
            self.store.insert(leases)
            .values(run_id=self.run_id, epoch=1, **values)
            .on_conflict_do_update(
                index_elements=[leases.c.run_id], set_={"epoch": leases.c.epoch + 1, **values}
            )
            .returning(leases.c.epoch)
        )
        with self.store.engine.begin() as conn:
            epoch = int(conn.execute(upsert).scalar_one())
            self._check_dbos_owner(conn, epoch)
        return epoch

    def _check_dbos_owner(self, conn: sa.Connection, epoch: int) -> None:
        """Roll the take back unless DBOS's ownership token of the workflow is still ours."""
        if self.dbos_token is None or self.workflow_id is None:
            return
        found = _workflow_status()
        if found is None:
            return
        status, translate = found
        query = sa.select(status.c.owner_xid).where(status.c.workflow_uuid == self.workflow_id)
        if not self.store.is_sqlite:  # SQLite: the upsert already holds the write lock
            query = query.with_for_update(key_share=True)
        query = query.execution_options(schema_translate_map=translate)
        if conn.execute(query).scalar() != self.dbos_token:
            raise LeaseLost(self.run_id, epoch, "DBOS gave the workflow to a newer execution")

    def check(self, conn: sa.Connection, *, lock: bool = True) -> None:
        """In the caller's transaction: raise :class:`LeaseLost` unless the epoch is current.
        With ``lock``, a taker's increment waits for this transaction (a row lock on
        PostgreSQL, the write lock on SQLite), so what the transaction writes is fenced."""
        if self.lost is not None or self.epoch is None:
            raise LeaseLost(self.run_id, self.epoch, self.lost or "the lease was not taken")
        where = (leases.c.run_id == self.run_id, leases.c.epoch == self.epoch)
        if lock and self.store.is_sqlite:  # a write, so pysqlite opens BEGIN IMMEDIATE here
            held = conn.execute(sa.update(leases).where(*where).values(epoch=leases.c.epoch))
            ok = held.rowcount == 1
        else:
            query = sa.select(leases.c.epoch).where(*where)
            if lock:
                query = query.with_for_update(read=True)
            ok = conn.execute(query).first() is not None
        if not ok:
            self.lose("a newer execution took it")
            raise LeaseLost(self.run_id, self.epoch)
        self._fresh_until = time.monotonic() + FRESH_SECONDS

    def verify(self) -> None:
        """Check the lease now, reading only (before a step starts)."""
        with self.store.engine.connect() as conn:
            self.check(conn, lock=False)

    async def verified(self) -> None:
        """Before a step starts: the lease holds (checked now, or within FRESH_SECONDS)."""
        if self.lost is not None:
            raise LeaseLost(self.run_id, self.epoch, self.lost)
        if time.monotonic() >= self._fresh_until:
            await asyncio.to_thread(self.verify)

    # -- losing ------------------------------------------------------------------------

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the lease's event loop) once the lease is found lost."""
        self._on_lost.append(callback)

    def lose(self, why: str) -> None:
        """Mark the lease lost (from any thread); on the lease's loop, the callbacks run and
        then it is logged."""
        if self.lost is not None:
            return
        self.lost = why
        if self._loop is None or self._loop.is_closed():
            self._log()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._fire()
        else:
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        if self._event is not None:
            self._event.set()
        for callback in self._on_lost:
            callback()
        self._log()

    def _log(self) -> None:
        logger.warning(
            "run %s (segment %s, epoch %s) lost its lease: %s; this execution stops",
            self.run_id,
            self.segment,
            self.epoch,
            self.lost,
        )

    async def guard(self, work: Awaitable[T]) -> T:
        """Run ``work`` while the lease holds; if it is lost first, cancel the work and raise
        :class:`LeaseLost`. Work that finished first returns its value (the caller decides
        whether it may still record it)."""
        if self._event is None:
            return await work
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled():
            raise LeaseLost(self.run_id, self.epoch, self.lost or "lost while the step ran")
        return task.result()


class FencedEngine:
    """The store's engine, whose every write transaction first checks the lease."""

    def __init__(self, engine: sa.Engine, lease: Lease):
        self.raw = engine
        self.lease = lease

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        if self.lease.lost is not None:
            raise LeaseLost(self.lease.run_id, self.lease.epoch, self.lease.lost)
        with self.raw.begin() as conn:
            self.lease.check(conn)
            yield conn

    def connect(self) -> sa.Connection:
        return self.raw.connect()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def fenced_store(store: Store, lease: Lease) -> Store:
    """A view of ``store`` whose writes are fenced by ``lease`` (its reads are not)."""
    view = object.__new__(type(store))
    view.__dict__.update(store.__dict__)
    view.engine = cast(sa.Engine, FencedEngine(store.engine, lease))
    return view


# -- late results of non-idempotent calls --------------------------------------------------


def args_digest(args: Any) -> str:
    return hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()


def record_late(lease: Lease, call_id: str, args: Any, result: dict[str, Any]) -> None:
    """Keep the result of a non-idempotent call that finished after its execution lost the
    lease: it took effect, and the newer execution must know before running it again."""
    row = {
        "run_id": lease.run_id,
        "call_id": call_id,
        "digest": args_digest(args),
        "epoch": lease.epoch or 0,
        "owner": lease.owner,
        "result": result,
        "finished_at": time.time(),
    }
    with lease.store.engine.begin() as conn:
        conn.execute(lease.store.insert(late_results).values(**row).on_conflict_do_nothing())


def finish_attempt(store: Store, lease: Lease, call_id: str, args: Any, result: Any) -> None:
    """Record a non-idempotent call's result (fenced); if the lease is lost, keep it as a
    late result instead and raise :class:`LeaseLost`. One thread call, so a cancellation of
    the waiting step cannot separate the two writes."""
    try:
        store.attempt_finish(lease.run_id, call_id, result)
    except LeaseLost:
        record_late(lease, call_id, args, result)
        raise


def late_result(store: Store, run_id: str, call_id: str, args: Any) -> dict[str, Any] | None:
    """The late result of this call with these arguments, if a stale execution left one."""
    query = sa.select(late_results.c.digest, late_results.c.result).where(
        late_results.c.run_id == run_id, late_results.c.call_id == call_id
    )
    with store.engine.connect() as conn:
        found = conn.execute(query).first()
    if found is None or found.digest != args_digest(args) or not isinstance(found.result, dict):
        return None
    return found.result


# -- noticing a lost lease while a step runs -----------------------------------------------


class LeaseWatcher:
    """Per event loop: every :data:`WATCH_SECONDS`, one query compares the epochs of the
    leases held here with the database's, and marks the superseded ones lost."""

    def __init__(self) -> None:
        self.leases: set[Lease] = set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def here(cls) -> LeaseWatcher:
        loop = asyncio.get_running_loop()
        watcher = _watchers.get(loop)
        if watcher is None:
            watcher = _watchers[loop] = cls()
        return watcher

    def add(self, lease: Lease) -> None:
        self.leases.add(lease)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def discard(self, lease: Lease) -> None:
        self.leases.discard(lease)

    async def _watch(self) -> None:
        while self.leases:
            await asyncio.sleep(WATCH_SECONDS)
            held = [lease for lease in self.leases if lease.lost is None]
            if not held:
                continue
            try:
                await asyncio.to_thread(_compare, held)
            except Exception:
                logger.warning("could not check this worker's leases", exc_info=True)


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LeaseWatcher] = (
    weakref.WeakKeyDictionary()
)


def _compare(held: list[Lease]) -> None:
    by_store: dict[int, list[Lease]] = {}
    for lease in held:
        by_store.setdefault(id(lease.store.engine), []).append(lease)
    for group in by_store.values():
        query = sa.select(leases.c.run_id, leases.c.epoch).where(
            leases.c.run_id.in_({lease.run_id for lease in group})
        )
        with group[0].store.engine.connect() as conn:
            current = {r.run_id: r.epoch for r in conn.execute(query)}
        for lease in group:
            if current.get(lease.run_id) != lease.epoch:
                lease.lose("a newer execution took it")


def _workflow_status() -> tuple[sa.Table, dict[str, Any]] | None:
    """DBOS's workflow_status table (it holds each workflow's ownership token) and the
    schema translation its statements need."""
    try:
        from dbos._dbos import _get_dbos_instance
        from dbos._schemas import SCHEMA_PLACEHOLDER

        sys_db = _get_dbos_instance()._sys_db
        table = sys_db.tables.workflow_status
        translate = {SCHEMA_PLACEHOLDER: sys_db.schema}
    except Exception:  # no DBOS in this process, or another layout: the epoch alone fences
        return None
    return (table, translate) if "owner_xid" in table.c else None
