"""Durable steps: the run's model and tools wrapped so each call is a checkpointed step.

A step returns plain JSON (the model's message; a tool's rendered observation with its
images, base64), so a replay gives the loop exactly what the first execution gave it. A
non-idempotent tool's call is recorded before and after it runs: a call cut short by a
crash is not run again without a human's approval.

An agent used as a tool runs its child run *inside* the parent's tool step. The child's
events go to the parent's stream as they happen and are checkpointed with the step's
result; its spend is counted in the parent's budget. A finished step is never run again:
on a replay its events come back from the checkpoint and its spend is counted again. The
child's own model and tool calls are checkpointed too, by loopwise rather than as DBOS
steps (:mod:`loopwise.durable.children`): a child cut short by a crash runs again inside
the re-executed step, replaying its finished calls and making only the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NoReturn, Protocol

from dbos import DBOS
from dbos._error import DBOSWorkflowCancelledError, DBOSWorkflowConflictIDError

from ..approval import ApprovalNeeded
from ..capabilities import Capability
from ..errors import ModelError
from ..events import Event, RunFinished, parse_event
from ..messages import (
    AssistantMessage,
    ImagePart,
    Message,
    ToolDefinition,
    dump_messages,
    load_messages,
)
from ..models import Model, ModelSettings
from ..run import RunContext
from ..tools import Tool, ToolContext, ToolFailed, render_exception, render_output
from .fencing import Lease, LeaseLost, finish_attempt, late_result
from .store import Store

__all__ = ["DurableCheckpoints", "DurableModel", "StepHost", "durable_tool"]

_CTX = "__loopwise_ctx"


class StepHost(Protocol):
    """The running segment, as the steps see it."""

    store: Store
    """The run's store; its writes are fenced by ``lease``."""
    lease: Lease
    interrupted: set[str]
    children: Capability
    """What child runs (agents used as tools) inherit: their calls' checkpoints."""

    async def flush(self) -> bool:
        """Write the events and row changes buffered so far."""
        ...

    async def cancelled(self) -> NoReturn:
        """DBOS cancelled the workflow: end the run through the loop's cancel path."""
        ...

    async def fenced(self) -> NoReturn:
        """The run's lease was lost: end the run through the loop's cancel path, unrecorded."""
        ...


class DurableCheckpoints(Capability):
    """A durable run segment's checkpoints as a capability: the model and every tool
    become DBOS steps; child runs get their own checkpoints (``host.children``)."""

    name = "durable"

    def __init__(self, host: StepHost):
        self.host = host

    def wrap_model(self, run: RunContext, model: Model) -> Model:
        return DurableModel(model, self.host)

    def wrap_tool(self, run: RunContext, tool: Tool) -> Tool:
        return durable_tool(tool, self.host)

    def for_child(self, run_id: str) -> Capability | None:
        return self.host.children.for_child(run_id)


class DurableModel:
    """Wraps the run's real model: each request is a checkpointed step returning JSON."""

    def __init__(self, real: Model, host: StepHost):
        self.real = real
        self._host = host

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
        try:
            await self._host.flush()
            out: dict[str, Any] = await DBOS.run_step_async(
                {"name": "loopwise.model", "preemptible": True},
                _fenced_model_step,
                self._host.lease,
                self.real,
                list(messages),
                list(tools),
                settings,
            )
        except (LeaseLost, DBOSWorkflowConflictIDError):
            await self._host.fenced()
        except DBOSWorkflowCancelledError:
            await self._host.cancelled()
        return message_of(out)


def message_of(out: dict[str, Any]) -> AssistantMessage:
    """The model's answer held by a checkpoint (its error is raised again)."""
    if "error" in out:
        raise ModelError(str(out["error"]), status=out.get("status"))
    message = load_messages([out["message"]])[0]
    if not isinstance(message, AssistantMessage):
        raise ModelError("The checkpointed model step does not hold an assistant message.")
    return message


async def _fenced_model_step(
    lease: Lease,
    real: Model,
    messages: list[Message],
    tools: list[ToolDefinition],
    settings: ModelSettings,
) -> dict[str, Any]:
    """The model step: starts only under the lease; its answer is not recorded once lost."""
    await lease.verified()
    out = await lease.guard(model_step(real, messages, tools, settings))
    if lease.lost is not None:
        raise LeaseLost(lease.run_id, lease.epoch, lease.lost)
    return out


async def model_step(
    real: Model, messages: list[Message], tools: list[ToolDefinition], settings: ModelSettings
) -> dict[str, Any]:
    try:
        message = await real.request(messages, tools, settings)
    except ModelError as exc:
        return {"error": str(exc), "status": exc.status}
    except Exception as exc:  # an adapter bug: the run fails saying what it was
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"message": json.loads(dump_messages([message]))[0]}


def durable_tool(real: Tool, host: StepHost) -> Tool:
    """A copy of ``real`` whose every call is a checkpointed step returning the rendered
    observation. Its first act is to reserve the step id, so the concurrent calls of a
    turn take their ids in a fixed order."""

    async def call(**kwargs: Any) -> Any:
        ctx: ToolContext[Any] = kwargs.pop(_CTX)
        ran: list[bool] = []
        reservation = DBOS.reserve_step()
        try:
            await host.flush()
            out: dict[str, Any] = await reservation.run_async(
                {"name": f"loopwise.tool:{real.name}", "preemptible": True},
                _tool_step,
                host.store,
                host.lease,
                real,
                kwargs,
                ctx,
                reservation.step_id,
                ran,
            )
        except (LeaseLost, DBOSWorkflowConflictIDError):
            await host.fenced()
        except DBOSWorkflowCancelledError:
            await host.cancelled()
        if not ran:
            replay_children(ctx, out)
        if out.get("interrupted"):
            host.interrupted.add(ctx.call_id)
            raise ApprovalNeeded(ctx.call_id)
        return observation_of(out)

    return replace(
        real, function=call, context_param=_CTX, timeout=None, max_output_chars=sys.maxsize
    )


async def _tool_step(
    store: Store,
    lease: Lease,
    real: Tool,
    args: dict[str, Any],
    ctx: ToolContext[Any],
    step_id: int,
    ran: list[bool],
) -> dict[str, Any]:
    ran.append(True)
    children: list[dict[str, Any]] = []
    if ctx.run is not None:  # child runs' events: passed on live, checkpointed with the result
        ctx = replace(ctx, run=replace(ctx.run, emit=collect(children, ctx.run.emit)))
    result = await _tool_attempt(store, lease, real, args, ctx, step_id)
    if children:
        result["events"] = children
    return result


def observation_of(out: dict[str, Any]) -> Any:
    """What the tool returns to the loop for a checkpointed result (an error is raised)."""
    if out["is_error"]:
        raise ToolFailed(str(out["content"]))
    images = _load_images(out.get("images"))
    return [str(out["content"]), *images] if images else str(out["content"])


def collect(into: list[dict[str, Any]], emit: Callable[[Event], None] | None) -> Any:
    def collect(event: Event) -> None:
        into.append(event.to_dict())
        if emit is not None:
            emit(event)

    return collect


def replay_children(ctx: ToolContext[Any], out: dict[str, Any]) -> None:
    """A replayed step: emit its child runs' checkpointed events again, in order, and
    count their spend again (the children do not run again)."""
    scope = ctx.run
    if scope is None:
        return
    for data in out.get("events", ()):
        event = parse_event(data)
        if scope.emit is not None:
            scope.emit(event)
        if isinstance(event, RunFinished) and event.parent_run_id == ctx.run_id:
            scope.tracker.settle((0, 0.0), event.usage, event.cost_usd)


def _dump_images(images: Sequence[ImagePart]) -> list[dict[str, str]]:
    return [{"media_type": i.media_type, "data": i.data} for i in images]


def _load_images(data: Any) -> list[ImagePart]:
    """The checkpointed images of a tool result (a malformed entry fails the step)."""
    if not data:
        return []
    if not isinstance(data, list) or not all(
        isinstance(i, dict)
        and isinstance(i.get("media_type"), str)
        and isinstance(i.get("data"), str)
        for i in data
    ):
        raise ToolFailed("ERROR: the checkpointed images of this tool result are malformed.")
    return [ImagePart(media_type=i["media_type"], data=i["data"]) for i in data]


async def _tool_attempt(
    store: Store,
    lease: Lease,
    real: Tool,
    args: dict[str, Any],
    ctx: ToolContext[Any],
    step_id: int,
) -> dict[str, Any]:
    """Run the tool under the lease. A non-idempotent call is recorded before and after it
    runs (both fenced); one that finished after the lease was lost leaves a late result."""
    if real.idempotent:
        await lease.verified()
    else:
        state, stored = await asyncio.to_thread(
            store.attempt_begin, ctx.run_id, ctx.call_id, step_id, ctx.approved
        )
        if state == "finished" and stored is not None:
            return stored
        if state == "interrupted" or ctx.approved:  # did a stale execution finish it late?
            late = await asyncio.to_thread(late_result, store, ctx.run_id, ctx.call_id, args)
            if late is not None:
                await asyncio.to_thread(store.attempt_finish, ctx.run_id, ctx.call_id, late)
                return late
        if state == "interrupted":
            return {"interrupted": True}
    work = asyncio.ensure_future(call_tool(real, args, ctx))
    try:
        result = await lease.guard(work)
    except BaseException:  # cancelled or fenced: a call that completed still took effect
        if not real.idempotent and work.done() and not work.cancelled() and not work.exception():
            asyncio.get_running_loop().run_in_executor(
                None, _finish_quietly, store, lease, ctx.call_id, args, work.result()
            )
        raise
    if real.idempotent:
        if lease.lost is not None:
            raise LeaseLost(lease.run_id, lease.epoch, lease.lost)
        return result
    # In a thread: a cancellation of this step cannot stop the record half-way.
    await asyncio.to_thread(finish_attempt, store, lease, ctx.call_id, args, result)
    return result


def _finish_quietly(store: Store, lease: Lease, call_id: str, args: Any, result: Any) -> None:
    with contextlib.suppress(LeaseLost):
        finish_attempt(store, lease, call_id, args, result)


async def call_tool(real: Tool, args: dict[str, Any], ctx: ToolContext[Any]) -> dict[str, Any]:
    """Run the real tool; its rendered observation (and images) as plain JSON."""
    try:
        value = await real.call(args, ctx)
        content, images = render_output(value, real.max_output_chars)
        result: dict[str, Any] = {"content": content, "is_error": False}
        if images:
            result["images"] = _dump_images(images)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        result = {"content": render_exception(real.name, exc), "is_error": True}
    return result
