"""Running one turn's tool calls: resolve, validate, ask for approval, run concurrently.

Every call ends in a :class:`~loopwise.messages.ToolResultPart` (or waits for approval);
nothing a model sends raises to the user. Results keep the order of the calls.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import ValidationError

from .approval import (
    ApprovalCallback,
    ApprovalNeeded,
    ApprovalRequest,
    Approve,
    Decision,
    Reject,
    as_decision,
)
from .messages import ToolCallPart, ToolResultPart
from .scope import RunScope
from .tools import Tool, ToolContext, render_exception, render_output, render_validation_error

__all__ = ["Batch", "CallOutcome", "prepare", "run_prepared"]


@dataclass(slots=True)
class CallOutcome:
    """One call's fate: a result now, a validated call to run, or waiting for approval."""

    call: ToolCallPart
    tool: Tool | None = None
    args: dict[str, Any] = field(default_factory=dict)
    result: ToolResultPart | None = None
    pending: bool = False
    approved: bool = False
    duration: float = 0.0


@dataclass(slots=True)
class Batch:
    outcomes: list[CallOutcome]

    @property
    def pending(self) -> list[CallOutcome]:
        return [o for o in self.outcomes if o.pending]

    @property
    def results(self) -> list[ToolResultPart]:
        return [o.result for o in self.outcomes if o.result is not None]


def _error(call: ToolCallPart, content: str) -> ToolResultPart:
    return ToolResultPart(call_id=call.id, name=call.name, content=content, is_error=True)


def _resolve(call: ToolCallPart, tools: Mapping[str, Tool]) -> CallOutcome:
    """Find the tool and validate the arguments; problems become error results."""
    found = tools.get(call.name)
    if found is None:
        names = ", ".join(sorted(tools)) or "(none)"
        return CallOutcome(
            call,
            result=_error(
                call,
                f"ERROR: there is no tool named {call.name!r}. Available tools: {names}.",
            ),
        )
    if call.raw_args is not None:
        return CallOutcome(
            call,
            result=_error(
                call,
                f"ERROR: the arguments for tool {call.name!r} are not a valid JSON object: "
                f"{call.raw_args[:500]!r}. Send the arguments as one JSON object.",
            ),
        )
    try:
        args = found.validate(call.args)
    except ValidationError as exc:
        return CallOutcome(call, result=_error(call, render_validation_error(found, exc)))
    return CallOutcome(call, tool=found, args=args)


async def prepare(
    calls: Sequence[ToolCallPart],
    tools: Mapping[str, Tool],
    *,
    run_id: str,
    decisions: Mapping[str, Decision],
    approve: ApprovalCallback | None,
) -> Batch:
    """Resolve every call and settle approvals (from ``decisions``, else the callback).

    A decision given for a call is applied even when its tool does not need approval for
    these arguments: the call was paused by the tool itself (``ApprovalNeeded``).
    """
    outcomes = [_resolve(c, tools) for c in calls]
    for o in outcomes:
        decision = decisions.get(o.call.id)
        if o.tool is None or (decision is None and not o.tool.needs_approval(o.args)):
            continue
        if decision is None and approve is not None:
            request = ApprovalRequest(run_id, o.call.id, o.call.name, dict(o.call.args))
            answer = approve(request)
            if inspect.isawaitable(answer):
                answer = await answer
            decision = as_decision(answer)
        if decision is None:
            o.pending = True
        else:
            _apply(o, decision)
    return Batch(outcomes)


def _apply(o: CallOutcome, decision: Decision) -> None:
    assert o.tool is not None
    o.approved = isinstance(decision, Approve)
    if isinstance(decision, Reject):
        o.result = _error(
            o.call,
            f"ERROR: the call to {o.call.name!r} was rejected by the user: {decision.reason}. "
            "Do not retry it unchanged; find another way or explain in your answer.",
        )
    elif isinstance(decision, Approve) and decision.arguments is not None:
        try:
            o.args = o.tool.validate(decision.arguments)
        except ValidationError as exc:
            o.result = _error(
                o.call,
                "ERROR: the approver changed the arguments, and the new ones are invalid. "
                + render_validation_error(o.tool, exc),
            )


async def _run_one(o: CallOutcome, ctx: ToolContext[Any] | None) -> None:
    assert o.tool is not None
    started = time.perf_counter()
    try:
        value = await o.tool.call(o.args, ctx)
        content, images = render_output(value, o.tool.max_output_chars)
        o.result = ToolResultPart(
            call_id=o.call.id, name=o.call.name, content=content, images=images
        )
    except asyncio.CancelledError:
        raise
    except ApprovalNeeded:
        o.pending = True
    except Exception as exc:
        o.result = _error(o.call, render_exception(o.call.name, exc))
    o.duration = time.perf_counter() - started


async def run_prepared(
    batch: Batch,
    *,
    run_id: str,
    step: int,
    deps: Any,
    metadata: Mapping[str, Any],
    scope: RunScope | None = None,
) -> None:
    """Run every validated, approved call concurrently; results are filled in place."""
    runnable = [o for o in batch.outcomes if o.result is None and not o.pending]

    def context(o: CallOutcome) -> ToolContext[Any] | None:
        if o.tool is None or o.tool.context_param is None:
            return None
        return ToolContext(
            run_id, o.call.id, o.call.name, step, deps, metadata, approved=o.approved, run=scope
        )

    if len(runnable) == 1:
        await _run_one(runnable[0], context(runnable[0]))
    elif runnable:
        async with asyncio.TaskGroup() as group:
            for o in runnable:
                group.create_task(_run_one(o, context(o)))
