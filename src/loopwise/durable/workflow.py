"""The DBOS workflow that runs an agent durably: model calls and tool calls are steps.

A run is a chain of *segments*, each one workflow: segment 0 (workflow id = the run id)
starts the agent; it ends when the run finishes or pauses for approvals. A paused run holds
no workflow, thread or queue slot: it is rows in the database. When every pending call has
a decision, the engine enqueues the next segment (``<run id>.<n>``), which resumes the
saved transcript with those decisions. On recovery a segment replays from the top and each
step returns its checkpointed result, so the loop regenerates the same events. They are
stored once each: each run's own events (the parent's, each child's) come in a fixed order,
so the replay skips, per run, as many as the crashed execution stored (concurrent children
may interleave differently) and numbers the rest after them (seq = index in the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

from dbos import DBOS
from dbos._context import get_local_dbos_context
from dbos._error import DBOSException

from ..agent import Agent
from ..capabilities import Capability
from ..errors import UsageError
from ..events import Event, ModelResponded, RunFinished, RunStarted, ToolCalled
from ..limits import Budget
from ..messages import Usage
from ..result import RunResult
from ..state import RunState
from .children import ChildCheckpoints, ChildSteps
from .fencing import Lease, LeaseLost, LeaseWatcher, fenced_store
from .records import TERMINAL, PendingApproval
from .state import run_state_of, saved_state
from .steps import DurableCheckpoints
from .store import Store

__all__ = [
    "APP_VERSION",
    "QUEUE_NAME",
    "WORKFLOW_NAME",
    "Runtime",
    "approval_digest",
    "install",
    "run_workflow",
    "workflow_id",
]

logger = logging.getLogger("loopwise.durable")

WORKFLOW_NAME = "loopwise.run"
QUEUE_NAME = "loopwise-runs"
# Bump when the sequence of steps a run makes changes: runs started under another
# version are only resumed by workers of that version (DBOS application versions).
WORKFLOW_SCHEMA = 1
APP_VERSION = f"loopwise-durable-{WORKFLOW_SCHEMA}"


@dataclass(slots=True)
class Runtime:
    """What workflows in this process run against: the agents and the store."""

    agents: Mapping[str, Agent[Any, Any]]
    store: Store


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def workflow_id(run_id: str, segment: int) -> str:
    return run_id if segment == 0 else f"{run_id}.{segment}"


def approval_digest(run_id: str, segment: int, call_id: str, tool: str, args: Any) -> str:
    """Binds a decision to this run, this pause, this call, this tool and these arguments."""
    text = json.dumps([run_id, segment, call_id, tool, args], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@DBOS.workflow(name=WORKFLOW_NAME)
async def run_workflow(spec: dict[str, Any]) -> dict[str, Any]:
    """One segment of a run (see the module docstring); ``spec`` is plain JSON."""
    if _runtime is None:
        raise DBOSException("The loopwise durable engine is not started in this process.")
    return await _Segment(_runtime, spec).run()


class _Segment:
    def __init__(self, rt: Runtime, spec: dict[str, Any]):
        self.rt = rt
        self.spec = spec
        self.run_id = str(spec["run_id"])
        self.segment = int(spec.get("segment", 0))
        self.lease = _lease(rt.store, self.run_id, self.segment)
        self.store = fenced_store(rt.store, self.lease)  # every write checks the lease
        self.cancel = asyncio.Event()
        self.interrupted: set[str] = set()
        self.children: Capability = ChildCheckpoints(
            ChildSteps(self.store, self.run_id, self.lease), self.run_id
        )
        self.recorder = Recorder(self.store, self.run_id, self.segment)

    async def run(self) -> dict[str, Any]:
        row = await asyncio.to_thread(self.rt.store.row, self.run_id)
        if row is None or row["status"] in TERMINAL or row["segment"] != self.segment:
            return {"status": "skipped"}
        if not await self.lease.take():  # a newer execution holds the run: stop at once
            raise LeaseLost(self.run_id, None, self.lease.lost or "a newer execution holds it")
        self.lease.on_lost(self.cancel.set)  # the loop stops its step in flight and ends
        watcher = LeaseWatcher.here()
        watcher.add(self.lease)
        try:
            outcome = await self._run()
        finally:
            watcher.discard(self.lease)
        if self.lease.lost is not None:  # nothing of this execution is recorded
            raise LeaseLost(self.run_id, self.lease.epoch, self.lease.lost)
        return outcome

    async def _run(self) -> dict[str, Any]:
        try:
            agent = self._agent()
            stream = await self._stream(agent)
            await self.recorder.load()
            async for event in stream:
                if self.lease.lost is not None:
                    continue  # the loop is ending through its cancel path; record nothing
                self.recorder.add(event)
                if event.run_id != self.run_id:  # a child run's progress shows while it runs
                    await self._flush_fenced()
            result = stream.result
        except LeaseLost:
            return {"status": "fenced"}
        except DBOSException:
            raise
        except Exception as exc:
            if self.lease.lost is not None:
                return {"status": "fenced"}
            logger.exception("run %s could not run", self.run_id)
            await self._end(self.recorder.fail(f"{type(exc).__name__}: {exc}"))
            return {"status": "failed"}
        if self.lease.lost is not None:
            return {"status": "fenced"}
        if result.status == "input_required":
            await self._end(self.recorder.pause(result, self._pending(result)))
        else:
            await self._end(self.recorder.finish(result))
        return {"status": result.status}

    async def _flush_fenced(self) -> None:
        try:
            await self.recorder.flush()
        except LeaseLost:
            pass  # lose() already set the cancel event

    async def _end(self, write: Any) -> None:
        with contextlib.suppress(LeaseLost):
            await write

    def _agent(self) -> Agent[Any, Any]:
        """A per-run copy of the registered agent whose model and tools are durable steps."""
        name = str(self.spec.get("agent"))
        base = self.rt.agents.get(name)
        if base is None:
            raise UsageError(f"Agent {name!r} is not registered in this worker.")
        agent = copy.copy(base)
        agent.capabilities = [*base.capabilities, DurableCheckpoints(self)]
        budget = self.spec.get("budget")
        if isinstance(budget, dict) and budget:
            agent.budget = Budget(**budget)
        return agent

    async def _stream(self, agent: Agent[Any, Any]) -> Any:
        metadata = self.spec.get("metadata") or {}
        override = self.spec.get("model")
        model = override if isinstance(override, str) else None
        if self.segment == 0:
            return agent.stream(
                str(self.spec["input"]),
                run_id=self.run_id,
                metadata=metadata,
                model=model,
                cancel=self.cancel,
                text_deltas=False,
            )
        saved = await asyncio.to_thread(self.rt.store.state, self.run_id, self.segment - 1)
        if saved is None:
            raise UsageError(f"No saved state for segment {self.segment - 1}.")
        state = run_state_of(saved)
        self.recorder.seq = int(saved["seq"])
        self.recorder.tool_calls = state.tool_calls
        self._decide(state)
        return agent.stream(
            state, metadata=metadata, model=model, cancel=self.cancel, text_deltas=False
        )

    def _decide(self, state: RunState) -> None:
        """Each pending call's decision, checked against its digest: no match, no decision."""
        given = self.spec.get("decisions")
        given = given if isinstance(given, dict) else {}
        for p in state.pending:
            d = given.get(p.call_id)
            digest = approval_digest(self.run_id, self.segment - 1, p.call_id, p.tool, p.args)
            if not isinstance(d, dict) or d.get("digest") != digest:
                raise UsageError(f"No valid decision was given for pending call {p.call_id!r}.")
            if d.get("approve") is True:
                edited = d.get("arguments")
                state.approve(p.call_id, edited if isinstance(edited, dict) else None)
            else:
                state.reject(p.call_id, str(d.get("reason") or "rejected by the user"))

    def _pending(self, result: RunResult[Any]) -> list[PendingApproval]:
        return [
            PendingApproval(
                call_id=p.call_id,
                tool=p.tool_name,
                arguments=p.args,
                reason="interrupted" if p.call_id in self.interrupted else p.reason,
            )
            for p in result.pending_approvals
        ]

    async def flush(self) -> bool:
        return await self.recorder.flush()

    async def cancelled(self) -> NoReturn:
        """DBOS cancelled the workflow: end the loop through its own cancel path."""
        self.cancel.set()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    async def fenced(self) -> NoReturn:
        """This execution lost the run's lease: end the loop, recording nothing."""
        self.lease.lose(self.lease.lost or "a newer execution took it")
        self.cancel.set()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")


def _lease(store: Store, run_id: str, segment: int) -> Lease:
    """This execution's lease on the run, bound to DBOS's ownership token of the workflow."""
    ctx = get_local_dbos_context()
    token = getattr(ctx, "owner_xid", None) if ctx is not None else None
    return Lease(
        store,
        run_id,
        segment,
        DBOS.executor_id if ctx is not None else "local",
        workflow_id=workflow_id(run_id, segment),
        dbos_token=token if isinstance(token, str) else None,
    )


INTERRUPTED_DETAIL = (
    "Call {calls} was cut short before its result was recorded: its worker crashed, was "
    "stopped or lost its lease, so the first attempt may still be running or may already "
    "have taken effect; check before approving it to run again."
)


class Recorder:
    """Buffers a segment's events and row changes; writes them before each step (one
    transaction) and at the end."""

    def __init__(self, store: Store, run_id: str, segment: int):
        self.store = store
        self.run_id = run_id
        self.segment = segment
        self.seq = 0
        self.tool_calls = 0
        self.finished: dict[str, Any] | None = None
        self._events: list[dict[str, Any]] = []
        self._changes: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._stored: Counter[str] = Counter()  # per run: events an earlier execution stored
        self._seen: Counter[str] = Counter()

    async def load(self) -> None:
        """Count, per run, the events a crashed execution of this segment stored."""
        page = 1000
        while True:
            found = await asyncio.to_thread(
                self.store.events, self.run_id, after=self.seq, limit=page
            )
            for e in found:
                self._stored[str(e.data.get("run_id"))] += 1
                self.seq = e.seq
            if len(found) < page:
                return

    def add(self, event: Event) -> None:
        data = event.to_dict()
        self._seen[event.run_id] += 1
        if self._seen[event.run_id] > self._stored[event.run_id]:
            self.seq += 1
            self._events.append(
                {"run_id": self.run_id, "seq": self.seq, "type": event.type, "data": data}
            )
        if event.run_id != self.run_id:
            return  # a child run's event (an agent used as a tool): shown, not this run's state
        if isinstance(event, RunStarted):
            self._changes.update(status="in_progress", model=event.model, started_at=event.time)
        elif isinstance(event, ModelResponded):
            self._changes.update(
                steps=event.step, usage=asdict(event.total_usage), cost=event.total_cost_usd
            )
        elif isinstance(event, ToolCalled):
            self.tool_calls += 1
            self._changes["tool_calls"] = self.tool_calls
        elif isinstance(event, RunFinished):
            self.finished = data

    async def flush(self, state: dict[str, Any] | None = None, **changes: Any) -> bool:
        async with self._lock:
            new_events, self._events = self._events, []
            changes = {**self._changes, **changes}
            self._changes = {}
            if not new_events and not changes and state is None:
                return True
            return await asyncio.to_thread(
                self.store.progress, self.run_id, self.segment, changes, new_events, state
            )

    async def pause(self, result: RunResult[Any], pending: list[PendingApproval]) -> None:
        cut = [p.call_id for p in pending if p.reason == "interrupted"]
        detail = INTERRUPTED_DETAIL.format(calls=", ".join(map(repr, cut))) if cut else None
        await self.flush(
            state=saved_state(_state(result), self.seq),
            status="input_required",
            pending=[asdict(p) for p in pending],
            detail=detail,
            **_totals(result),
        )

    async def finish(self, result: RunResult[Any]) -> None:
        output = self.finished.get("output") if self.finished else None
        await self.flush(
            state=saved_state(_state(result), self.seq),
            status=result.status,
            output=output,
            stop_reason=result.stop_reason,
            detail=result.detail,
            error=result.error,
            pending=[],
            finished_at=time.time(),
            **_totals(result),
        )

    async def fail(self, error: str) -> None:
        """End the run as failed before or outside the loop (e.g. an unknown agent)."""
        self._events.clear()
        if self.seq == 0 and self.segment > 0:
            self.seq = await asyncio.to_thread(self.store.last_seq, self.run_id)
        self.add(
            RunFinished(
                run_id=self.run_id,
                step=0,
                status="failed",
                stop_reason="error",
                output=None,
                error=error,
                usage=Usage(),
                cost_usd=0.0,
                steps=0,
                duration=0.0,
            )
        )
        await self.flush(
            status="failed", stop_reason="error", error=error, pending=[], finished_at=time.time()
        )


def _state(result: RunResult[Any]) -> RunState:
    if result.state is None:
        raise UsageError("The run ended without a state to save.")
    return result.state


def _totals(result: RunResult[Any]) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "usage": asdict(result.usage),
        "cost": result.cost_usd,
        "tool_calls": result.tool_calls,
        "model": result.model,
    }
