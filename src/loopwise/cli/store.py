"""CLI runs in the local store: the same SQLite file (``<data dir>/loopwise.sqlite``) and
tables the service uses, written through :class:`~loopwise.durable.store.Store`.

A CLI run is a row whose ``spec`` says ``"origin": "cli"`` and holds the flags it ran
with (so ``loopwise resume`` rebuilds the same agent, tools and workspace). Its events
are stored as they happen (``run_finished`` included), and its :class:`RunState` is saved
where it pauses for approval and where it ends, as the service saves its own. The CLI
process runs it; no worker ever does. While it runs, the row is touched every few
seconds (a service's reconciler ends a run it has not seen change for a minute, which is
what happens when the CLI process is killed); a run cancelled from outside
(``loopwise runs cancel``) is noticed at the next touch and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict
from typing import Any

from ..events import (
    Event,
    ModelResponded,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCalled,
)
from ..result import RunResult

__all__ = [
    "ORIGIN",
    "RunRecorder",
    "StoreError",
    "claim_segment",
    "is_cli_run",
    "open_store",
]

ORIGIN = "cli"
HEARTBEAT_SECONDS = 5.0


class StoreError(Exception):
    """The local store could not be opened or written (one sentence)."""


def open_store(database: str | None = None) -> Any:
    """The engine's :class:`Store` on ``database`` (default: the data directory's SQLite),
    its tables created or migrated."""
    from ..durable.schema import resolve_database
    from ..durable.store import Store

    try:
        store = Store(resolve_database(database))
        store.migrate()
    except Exception as exc:  # sqlalchemy errors, an unwritable directory
        raise StoreError(
            f"the run store could not be opened: {type(exc).__name__}: {exc}"
        ) from None
    return store


def is_cli_run(row: Mapping[str, Any] | None) -> bool:
    """Whether a ``runs`` row was written by the CLI (the service never sets ``origin``)."""
    spec = (row or {}).get("spec")
    return isinstance(spec, dict) and spec.get("origin") == ORIGIN


def claim_segment(store: Any, run_id: str, segment: int) -> bool:
    """Move a paused CLI run to its next segment, ``in_progress``; one caller wins."""
    changes = {"segment": segment + 1, "status": "in_progress", "pending": []}
    return bool(store.progress(run_id, segment, changes, []))


class RunRecorder:
    """Writes one segment of a CLI run: the row's counters, its events, its end state."""

    def __init__(self, store: Any, run_id: str, segment: int = 0, seq: int = 0):
        self.store = store
        self.run_id = run_id
        self.segment = segment
        self.seq = seq
        self.tool_calls = 0
        self.lost = False  # the row ended from outside (cancelled, or ended by a reconciler)
        self._events: list[dict[str, Any]] = []
        self._changes: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def create(
        cls,
        store: Any,
        run_id: str,
        *,
        agent: str,
        task: str,
        model: str | None,
        options: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> RunRecorder:
        """Insert the run's row (``queued``) and return its recorder."""
        now = time.time()
        spec = {
            "origin": ORIGIN,
            "agent": agent,
            "input": task,
            "model": model,
            "options": dict(options),
            "metadata": dict(metadata or {}),
        }
        values: dict[str, Any] = {
            "id": run_id,
            "agent": agent,
            "status": "queued",
            "input": task,
            "model": model,
            "spec": spec,
            "usage": {},
            "cost": 0.0,
            "steps": 0,
            "tool_calls": 0,
            "pending": [],
            "segment": 0,
            "metadata": dict(metadata or {}),
            "created_at": now,
            "updated_at": now,
        }
        store.create_run(values, lambda _conn: None)  # no workflow: this process runs it
        return cls(store, run_id)

    def add(self, event: Event) -> None:
        """Buffer an event (text deltas are shown, not stored, as the service does)."""
        if isinstance(event, TextDelta):
            return
        self.seq += 1
        row = {"run_id": self.run_id, "seq": self.seq, "type": event.type, "data": event.to_dict()}
        self._events.append(row)
        if event.run_id != self.run_id:
            return
        if isinstance(event, RunStarted):
            self._changes.update(status="in_progress", model=event.model, started_at=event.time)
        elif isinstance(event, ModelResponded):
            self._changes.update(
                steps=event.step, usage=asdict(event.total_usage), cost=event.total_cost_usd
            )
        elif isinstance(event, ToolCalled):
            self.tool_calls += 1
            self._changes["tool_calls"] = self.tool_calls

    async def flush(self, state: dict[str, Any] | None = None, **changes: Any) -> bool:
        """Write what is buffered (and touch the row); False once the row ended elsewhere."""
        async with self._lock:
            new_events, self._events = self._events, []
            values = {**self._changes, **changes}
            self._changes = {}
            if self.lost:
                return False
            ok = await asyncio.to_thread(
                self.store.progress, self.run_id, self.segment, values, new_events, state
            )
            self.lost = not ok
            return bool(ok)

    @contextlib.asynccontextmanager
    async def heartbeat(self, cancel: asyncio.Event) -> AsyncIterator[None]:
        """While the run goes on: flush every few seconds; set ``cancel`` if the row ended."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_SECONDS)
                if not await self.flush():
                    cancel.set()
                    return

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def end(self, result: RunResult[Any]) -> bool:
        """Save how the segment ended: paused with its pending calls, or finished."""
        from ..durable.state import saved_state

        totals = {
            "steps": result.steps,
            "usage": asdict(result.usage),
            "cost": result.cost_usd,
            "tool_calls": result.tool_calls,
            "model": result.model,
        }
        state = saved_state(result.state, self.seq) if result.state is not None else None
        if result.status == "input_required":
            pending = [
                {
                    "call_id": p.call_id,
                    "tool": p.tool_name,
                    "arguments": dict(p.args),
                    "reason": p.reason,
                }
                for p in result.pending_approvals
            ]
            return await self.flush(state, status="input_required", pending=pending, **totals)
        output = result.state.output if result.state is not None else None
        return await self.flush(
            state,
            status=result.status,
            output=output,
            stop_reason=result.stop_reason,
            detail=result.detail,
            error=result.error,
            pending=[],
            finished_at=time.time(),
            **totals,
        )

    async def fail(self, error: str) -> None:
        """End the row as failed when the run could not go on (an error before its end)."""
        self.add(
            RunFinished(
                run_id=self.run_id,
                step=0,
                status="failed",
                stop_reason="error",
                output=None,
                error=error,
                usage=_zero_usage(),
                cost_usd=0.0,
                steps=0,
                duration=0.0,
            )
        )
        await self.flush(
            status="failed", stop_reason="error", error=error, pending=[], finished_at=time.time()
        )


def _zero_usage() -> Any:
    from ..messages import Usage

    return Usage()
