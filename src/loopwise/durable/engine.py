"""The durable engine: submit runs, read their state and events, decide approvals, cancel.

``DurableEngine(agents, database=...)`` with ``workers=True`` (the default) launches DBOS
in this process and runs workflows from the queue ``loopwise-runs``; with
``workers=False`` (an API-only process) it only reads and writes the database through a
``DBOSClient``. Every method is async; database work runs in threads.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

import sqlalchemy as sa
from pydantic_core import ValidationError

from ..agent import Agent
from ..errors import UsageError
from ..messages import Message
from ..tools import render_validation_error
from . import dbos_runtime
from .checks import (
    MAX_ARGUMENTS_BYTES,
    MAX_INPUT_BYTES,
    check_budget,
    check_input,
    check_metadata,
    check_model,
)
from .heartbeat import ExecutorSlot, Heartbeat, check_executor_free, supervise
from .reconcile import Reconciler, final_event
from .records import (
    Conflict,
    IdempotencyMismatch,
    InvalidArguments,
    NotFound,
    RunRecord,
    StoredEvent,
)
from .schema import resolve_database, runs
from .state import messages_of
from .store import Store
from .workflow import APP_VERSION, QUEUE_NAME, WORKFLOW_NAME, approval_digest, workflow_id

__all__ = ["MAX_INPUT_BYTES", "DurableEngine"]

logger = logging.getLogger("loopwise.durable")


class DurableEngine:
    """Durable runs of registered agents on SQLite (default: ``<data dir>/loopwise.sqlite``)
    or PostgreSQL (``database="postgresql://..."``).

    ``executor_id`` names this worker process to DBOS; every process needs its own. By
    default it is ``<hostname>-<n>``, ``n`` the lowest free slot (a lock file under
    ``<data dir>/executors``): stable across restarts, distinct on one machine. A worker
    started with the id of a dead one resumes its runs at once; otherwise a surviving
    worker takes them over once the dead one's heartbeat (every ``heartbeat_seconds``) is
    older than ``dead_after_seconds``. ``concurrency`` is how many runs one worker executes
    at a time (runs waiting for approval do not count); ``poll_seconds`` is how often
    workers look for queued runs (it bounds submit → start and approval → next step).
    Every ``reconcile_seconds`` each worker ends runs whose workflow ended without saying
    so (an escaped exception, a cancellation through DBOS itself): see
    :mod:`loopwise.durable.reconcile`.
    """

    def __init__(
        self,
        agents: Mapping[str, Agent[Any, Any]],
        *,
        database: str | None = None,
        executor_id: str | None = None,
        workers: bool = True,
        concurrency: int = 8,
        heartbeat_seconds: float = 5.0,
        dead_after_seconds: float = 30.0,
        poll_seconds: float = 0.25,
        reconcile_seconds: float = 10.0,
    ) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {concurrency}.")
        if reconcile_seconds <= 0:
            raise UsageError(f"reconcile_seconds must be positive, not {reconcile_seconds}.")
        if dead_after_seconds <= heartbeat_seconds:
            raise UsageError(
                f"dead_after_seconds ({dead_after_seconds}) must exceed heartbeat_seconds "
                f"({heartbeat_seconds})."
            )
        self.agents: Mapping[str, Agent[Any, Any]] = dict(agents)
        self.database = database
        self.executor_id = executor_id
        self.workers = workers
        self.concurrency = concurrency
        self.heartbeat_seconds = heartbeat_seconds
        self.dead_after_seconds = dead_after_seconds
        self.poll_seconds = poll_seconds
        self.reconcile_seconds = reconcile_seconds
        self._store: Store | None = None
        self._client: Any = None
        self._slot: ExecutorSlot | None = None
        self._heartbeat: Heartbeat | None = None
        self._reconciler: Reconciler | None = None
        self._tasks: builtins.list[asyncio.Task[None]] = []
        self._launched = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Create or migrate the tables; with workers, launch DBOS and start the heartbeat
        and the takeover supervisor."""
        if self._store is not None:
            raise UsageError("This engine is already started.")
        url = await asyncio.to_thread(resolve_database, self.database)
        store = Store(url)
        try:
            await asyncio.to_thread(store.migrate)
            await asyncio.to_thread(dbos_runtime.migrate, url)
            self._client = await asyncio.to_thread(dbos_runtime.client, url)
            if self.workers:
                await self._start_workers(store)
        except BaseException:
            await self._teardown(store)
            raise
        self._store = store

    async def _start_workers(self, store: Store) -> None:
        if self.executor_id is None:
            self._slot = ExecutorSlot.claim()
            self.executor_id = self._slot.executor_id
        await asyncio.to_thread(
            check_executor_free, store, self.executor_id, self.dead_after_seconds
        )
        self._heartbeat = Heartbeat(store, self.executor_id, self.heartbeat_seconds)
        await asyncio.to_thread(self._heartbeat.start)
        await asyncio.to_thread(
            dbos_runtime.register_queue, self._client, self.concurrency, self.poll_seconds
        )
        await asyncio.to_thread(
            dbos_runtime.launch,
            store,
            self.agents,
            executor_id=self.executor_id,
            poll_seconds=self.poll_seconds,
        )
        self._launched = True
        self._reconciler = Reconciler(store, self._client)
        self._tasks = [
            asyncio.create_task(
                supervise(
                    store,
                    self.executor_id,
                    interval=self.heartbeat_seconds,
                    dead_after=self.dead_after_seconds,
                    take_over=self._take_over,
                )
            ),
            asyncio.create_task(self._reconciler.run(self.reconcile_seconds)),
        ]

    async def stop(self) -> None:
        """Stop workers (their unfinished runs resume elsewhere or at the next start)."""
        store, self._store = self._store, None
        if store is not None:
            await self._teardown(store)

    async def _teardown(self, store: Store) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._launched:
            await asyncio.to_thread(dbos_runtime.destroy)
            self._launched = False
        if self._heartbeat is not None:
            await asyncio.to_thread(self._heartbeat.stop, retire=True)
            self._heartbeat = None
        if self._slot is not None:
            self._slot.release()
            self._slot = None
            self.executor_id = None
        if self._client is not None:
            await asyncio.to_thread(self._client.destroy)
            self._client = None
        await asyncio.to_thread(store.dispose)

    async def __aenter__(self) -> DurableEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise UsageError("The engine is not started: await engine.start() first.")
        return self._store

    # -- runs ------------------------------------------------------------------------

    async def submit(
        self,
        agent: str,
        input: str,
        *,
        model: str | None = None,
        budget: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        principal: str | None = None,
        memory_key: str | None = None,
    ) -> RunRecord:
        """Queue a run; it is committed before this returns. The same ``idempotency_key``
        (per ``principal``, who starts the run) with the same request gives back the run it
        first created; with another request it is :class:`IdempotencyMismatch`.
        ``memory_key``, if given, is the memory namespace the run uses whatever its
        metadata says (the API derives it from the principal)."""
        store = self.store
        if agent not in self.agents:
            raise NotFound(f"No agent is named {agent!r}; known: {', '.join(sorted(self.agents))}.")
        spec = {
            "agent": agent,
            "input": check_input(input),
            "model": check_model(model),
            "budget": check_budget(budget),
            "metadata": check_metadata(metadata),
        }
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
            raise InvalidArguments("The idempotency key must be 1 to 255 characters long.")
        request_hash = _request_hash(spec)
        shown = check_metadata(metadata)
        if memory_key is not None:
            spec["metadata"] = {**shown, "memory_key": memory_key}
        run_id = f"run_{uuid.uuid4().hex}"
        now = time.time()
        values: dict[str, Any] = {
            "id": run_id,
            "agent": agent,
            "status": "queued",
            "input": input,
            "model": model,
            "spec": spec,
            "usage": {},
            "cost": 0.0,
            "steps": 0,
            "tool_calls": 0,
            "pending": [],
            "segment": 0,
            "metadata": shown,
            "idempotency_key": _scoped_key(idempotency_key, principal),
            "created_at": now,
            "updated_at": now,
            "principal": principal,
            "request_hash": request_hash if idempotency_key is not None else None,
        }
        workflow_spec = {"run_id": run_id, "segment": 0, **spec}

        def enqueue(conn: sa.Connection) -> None:
            self._client.enqueue_in_transaction(conn, _enqueue_options(run_id), workflow_spec)

        record, created = await asyncio.to_thread(store.create_run, values, enqueue)
        if not created:
            first = await asyncio.to_thread(store.request_hash, record.id)
            if first is not None and first != request_hash:
                raise IdempotencyMismatch(
                    "This Idempotency-Key was first used with a different request; send that "
                    "same request to get its run, or use a new key for a new run."
                )
        return record

    async def get(self, run_id: str) -> RunRecord:
        return await asyncio.to_thread(self.store.get, run_id)

    async def list(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        principal: str | None = None,
    ) -> tuple[builtins.list[RunRecord], str | None]:
        """Runs (only ``principal``'s, if given), newest first, and a cursor for the next
        page (``None`` at the end)."""
        if not 1 <= limit <= 500:
            raise InvalidArguments(f"limit must be between 1 and 500, not {limit}.")
        return await asyncio.to_thread(
            self.store.list_runs,
            status=status,
            agent=agent,
            limit=limit,
            cursor=cursor,
            principal=principal,
        )

    async def events(
        self, run_id: str, *, after: int = 0, limit: int = 500
    ) -> builtins.list[StoredEvent]:
        """The run's events with ``seq > after`` in order (seq runs 1, 2, …)."""
        if not 1 <= limit <= 5000:
            raise InvalidArguments(f"limit must be between 1 and 5000, not {limit}.")
        return await asyncio.to_thread(self.store.events, run_id, after=after, limit=limit)

    async def transcript(self, run_id: str) -> builtins.list[Message]:
        """The messages as of the end of the run's last segment (paused or finished)."""
        store = self.store
        await asyncio.to_thread(store.get, run_id)
        saved = await asyncio.to_thread(store.state, run_id)
        return [] if saved is None else messages_of(saved)

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run that has not ended (``Conflict`` if it has)."""
        finished = partial(final_event, status="cancelled", stop_reason="cancelled", error=None)
        record = await asyncio.to_thread(self.store.cancel, run_id, finished)
        segment = await asyncio.to_thread(_segment_of, self.store, run_id)
        try:
            await self._client.cancel_workflow_async(workflow_id(run_id, segment))
        except Exception:  # it may not exist yet, or be done: the run row already says so
            logger.debug("cancel_workflow(%s) failed", run_id, exc_info=True)
        return record

    async def decide(
        self,
        run_id: str,
        call_id: str,
        *,
        approve: bool,
        arguments: dict[str, Any] | None = None,
        reason: str | None = None,
        principal: str | None = None,
    ) -> RunRecord:
        """Approve or reject one pending call; bound to this run, this call and its
        arguments. Edited ``arguments`` are validated against the tool's schema. The
        decision records ``principal``, who made it."""
        store = self.store
        row = await asyncio.to_thread(store.row, run_id)
        if row is None:
            raise NotFound(f"No run has the id {run_id!r}.")
        if isinstance(row["spec"], dict) and row["spec"].get("origin") == "cli":
            raise Conflict(
                f"Run {run_id!r} was started by the loopwise CLI; decide with "
                "`loopwise approve` and continue with `loopwise resume`."
            )
        pending = {p["call_id"]: p for p in row["pending"] or []}
        if row["status"] != "input_required" or call_id not in pending:
            waiting = ", ".join(sorted(pending)) or "none"
            raise Conflict(
                f"Call {call_id!r} of run {run_id!r} is not waiting for a decision "
                f"(run status {row['status']}; pending calls: {waiting})."
            )
        call = pending[call_id]
        if arguments is not None:
            if not approve:
                raise InvalidArguments("Edited arguments can only come with an approval.")
            self._validate_arguments(row["agent"], call["tool"], arguments)
        segment = int(row["segment"])
        decision = {
            "approve": approve,
            "arguments": arguments,
            "reason": (reason or "")[:2000] or None,
            "digest": approval_digest(run_id, segment, call_id, call["tool"], call["arguments"]),
            "principal": principal,
        }

        def complete(conn: sa.Connection, row: dict[str, Any], made: dict[str, Any]) -> None:
            following = segment + 1
            conn.execute(
                sa.update(runs)
                .where(runs.c.id == run_id)
                .values(status="queued", segment=following, pending=[])
            )
            spec = {**row["spec"], "run_id": run_id, "segment": following, "decisions": made}
            options = _enqueue_options(workflow_id(run_id, following))
            self._client.enqueue_in_transaction(conn, options, spec)

        await asyncio.to_thread(store.decide, run_id, segment, call_id, decision, complete)
        return await self.get(run_id)

    def _validate_arguments(self, agent: str, tool_name: str, arguments: dict[str, Any]) -> None:
        if len(json.dumps(arguments, default=str)) > MAX_ARGUMENTS_BYTES:
            raise InvalidArguments(f"Edited arguments are larger than {MAX_ARGUMENTS_BYTES} bytes.")
        registered = self.agents.get(agent)
        found = registered.tools.get(tool_name) if registered is not None else None
        if found is None:
            raise InvalidArguments(f"Tool {tool_name!r} of agent {agent!r} is not registered here.")
        try:
            found.validate(arguments)
        except ValidationError as exc:
            raise InvalidArguments(render_validation_error(found, exc)) from None

    async def prune(self, *, older_than_seconds: float) -> int:
        """Delete runs that finished more than ``older_than_seconds`` ago, with their events,
        states, decisions and DBOS workflow records; returns how many runs."""
        cutoff = time.time() - older_than_seconds
        total = 0
        while True:
            gone = await asyncio.to_thread(self.store.prune, cutoff)
            if not gone:
                return total
            total += len(gone)
            ids = [workflow_id(r, s) for r, last in gone for s in range(last + 1)]
            try:
                await self._client.delete_workflows_async(ids)
            except Exception:
                logger.warning("could not delete the DBOS records of pruned runs", exc_info=True)

    async def _take_over(self, dead: str) -> int:
        """Re-enqueue the pending workflows of dead executor ``dead``."""
        found = await self._client.list_workflows_async(
            status="PENDING",
            executor_id=dead,
            name=WORKFLOW_NAME,
            load_input=False,
            load_output=False,
        )
        ids = [w.workflow_id for w in found]
        if ids:
            await self._client.resume_workflows_async(ids, queue_name=QUEUE_NAME)
        return len(ids)


def _enqueue_options(wf_id: str) -> dict[str, Any]:
    return {
        "workflow_name": WORKFLOW_NAME,
        "queue_name": QUEUE_NAME,
        "workflow_id": wf_id,
        "app_version": APP_VERSION,
    }


def _request_hash(spec: dict[str, Any]) -> str:
    """The SHA-256 of a run request in canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _scoped_key(key: str | None, principal: str | None) -> str | None:
    """The idempotency key as stored: one principal's key never finds another's run."""
    if key is None or principal is None:
        return key
    text = json.dumps([principal, key], ensure_ascii=False)
    return "p:" + hashlib.sha256(text.encode()).hexdigest()


def _segment_of(store: Store, run_id: str) -> int:
    row = store.row(run_id)
    return 0 if row is None else int(row["segment"])
