"""Checkpoints for the calls of child runs (agents used as tools) inside a durable run.

A child runs inside its parent's tool step, so its calls cannot be DBOS steps of their own:
concurrent sibling children would take step ids in a different order on a replay. Each call
is checkpointed instead under a key fixed by the child: ``<child run id>:model:<n>`` for its
n-th model request (a child's loop is deterministic given the same answers) and
``<child run id>:tool:<call id>`` for a tool call (call ids come from the checkpointed
answers). A call first looks up its key and returns what is stored, else runs and stores
its output; a re-executed parent step thus replays the child's finished calls and makes
only the rest. The child's run id (``<parent run id>.<call id>``) is itself fixed, and
grandchildren go through the same checkpoints.

Replayed answers carry their usage, so the child's loop counts their spend in the team's
budget again, once. A tool call that started grandchildren keeps their events with its
output: on a replay they are emitted again and their spend counted again. A non-idempotent
tool call is recorded before it runs: one cut short by a crash is not run again; the child
sees an error observation saying so (a child cannot pause a durable run for approval).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from ..capabilities import Capability
from ..messages import AssistantMessage, Message, ToolDefinition
from ..models import Model, ModelSettings
from ..run import RunContext
from ..tools import Tool, ToolContext
from .fencing import Lease
from .schema import child_steps
from .steps import call_tool, collect, message_of, model_step, observation_of, replay_children
from .store import Store

__all__ = ["ChildCheckpoints", "ChildSteps"]

_CTX = "__loopwise_ctx"
Output = dict[str, Any]


class ChildSteps:
    """The checkpoints of one durable run's child calls (``run_id`` is the top-level run).

    ``store`` is the segment's fenced store, so every put checks ``lease``; a call starts
    only once the lease is checked (:meth:`fence`)."""

    def __init__(self, store: Store, run_id: str, lease: Lease | None = None):
        self.store = store
        self.run_id = run_id
        self.lease = lease

    async def fence(self) -> None:
        """Raise :class:`LeaseLost` unless this execution still holds the run's lease."""
        if self.lease is not None:
            await self.lease.verified()

    async def get(self, key: str) -> Output | None:
        return await asyncio.to_thread(self._get, key)

    async def put(self, key: str, output: Output) -> None:
        await asyncio.to_thread(self._put, key, output)

    async def begin(self, key: str) -> tuple[str, Output | None]:
        """Before a non-idempotent call: ``("run", None)``, ``("finished", output)``, or
        ``("interrupted", None)`` when an earlier execution started it and never finished."""
        return await asyncio.to_thread(self._begin, key)

    def _get(self, key: str) -> Output | None:
        query = sa.select(child_steps.c.output).where(
            child_steps.c.run_id == self.run_id, child_steps.c.key == key
        )
        with self.store.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return found if isinstance(found, dict) else None

    def _put(self, key: str, output: Output) -> None:
        now = time.time()
        row = {"run_id": self.run_id, "key": key, "output": output, "updated_at": now}
        upsert = (
            self.store.insert(child_steps)
            .values(**row)
            .on_conflict_do_update(
                index_elements=[child_steps.c.run_id, child_steps.c.key],
                set_={"output": output, "updated_at": now},
            )
        )
        with self.store.engine.begin() as conn:
            conn.execute(upsert)

    def _begin(self, key: str) -> tuple[str, Output | None]:
        row = {"run_id": self.run_id, "key": key, "output": None, "updated_at": time.time()}
        fresh = (
            self.store.insert(child_steps)
            .values(**row)
            .on_conflict_do_nothing()
            .returning(child_steps.c.key)
        )
        with self.store.engine.begin() as conn:
            if conn.execute(fresh).first() is not None:
                return "run", None
        found = self._get(key)
        return ("finished", found) if found is not None else ("interrupted", None)


class ChildCheckpoints(Capability):
    """A durable run's child run (``run_id``): its model and tool calls are checkpointed in
    ``steps``, and so are its own children's."""

    name = "durable-child"

    def __init__(self, steps: ChildSteps, run_id: str):
        self.steps = steps
        self.run_id = run_id

    def wrap_model(self, run: RunContext, model: Model) -> Model:
        return _ChildModel(model, self.steps, self.run_id)

    def wrap_tool(self, run: RunContext, tool: Tool) -> Tool:
        return _child_tool(tool, self.steps, self.run_id)

    def for_child(self, run_id: str) -> Capability | None:
        return ChildCheckpoints(self.steps, run_id)


class _ChildModel:
    """A child's model: each request is looked up by its number in the child, else made."""

    def __init__(self, real: Model, steps: ChildSteps, run_id: str):
        self.real = real
        self._steps = steps
        self._run_id = run_id
        self._n = 0

    @property
    def provider(self) -> str:
        return self.real.provider

    @property
    def model_name(self) -> str:
        return self.real.model_name

    @property
    def context_window(self) -> int | None:
        return self.real.context_window

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        key = f"{self._run_id}:model:{self._n}"
        self._n += 1
        out = await self._steps.get(key)
        if out is None:
            await self._steps.fence()
            out = await model_step(self.real, list(messages), list(tools), settings)
            await self._steps.put(key, out)
        return message_of(out)


def _child_tool(real: Tool, steps: ChildSteps, run_id: str) -> Tool:
    """A copy of ``real`` whose calls in the child ``run_id`` are checkpointed."""

    async def call(**kwargs: Any) -> Any:
        ctx: ToolContext[Any] = kwargs.pop(_CTX)
        key = f"{run_id}:tool:{ctx.call_id}"
        out = await _checkpointed(steps, key, real, kwargs, ctx)
        return observation_of(out)

    return replace(
        real, function=call, context_param=_CTX, timeout=None, max_output_chars=sys.maxsize
    )


async def _checkpointed(
    steps: ChildSteps, key: str, real: Tool, args: dict[str, Any], ctx: ToolContext[Any]
) -> Output:
    if real.idempotent:
        stored = await steps.get(key)
        if stored is None:
            await steps.fence()
    else:
        state, stored = await steps.begin(key)
        if state == "interrupted":
            stored = {"content": _interrupted(real.name), "is_error": True}
            await steps.put(key, stored)
    if stored is not None:
        replay_children(ctx, stored)
        return stored
    grandchildren: list[dict[str, Any]] = []
    if ctx.run is not None:  # runs this call starts: their events are kept with its output
        ctx = replace(ctx, run=replace(ctx.run, emit=collect(grandchildren, ctx.run.emit)))
    out = await call_tool(real, args, ctx)
    if grandchildren:
        out["events"] = grandchildren
    await steps.put(key, out)
    return out


def _interrupted(name: str) -> str:
    return (
        f"ERROR: the call to tool {name!r} was cut short by a crash and was not run again: "
        "the tool is not idempotent, so a repeat could do its effect twice. Check whether it "
        "took effect before calling it again."
    )
