"""Running one turn's tool calls: resolve and validate each, then run the allowed ones
concurrently.

Every call ends in a :class:`~loopwise.messages.ToolResultPart` (or waits for approval);
nothing a model sends raises to the user. Results keep the order of the calls. Deciding
calls (approvals, capabilities) is in :mod:`loopwise.loop_tools`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import ValidationError

from ._sync import SyncRunner
from .approval import ApprovalNeeded
from .messages import ToolCallPart, ToolResultPart
from .scope import RunScope
from .tools import Tool, ToolContext, render_exception, render_output, render_validation_error

__all__ = ["Batch", "CallOutcome", "error_result", "resolve", "run_prepared"]


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
    started: bool = False
    edited: dict[str, Any] | None = None
    """Arguments an approver or a capability gave instead of the model's."""


@dataclass(slots=True)
class Batch:
    outcomes: list[CallOutcome]

    @property
    def pending(self) -> list[CallOutcome]:
        return [o for o in self.outcomes if o.pending]

    @property
    def results(self) -> list[ToolResultPart]:
        return [o.result for o in self.outcomes if o.result is not None]


def error_result(call: ToolCallPart, content: str) -> ToolResultPart:
    return ToolResultPart(call_id=call.id, name=call.name, content=content, is_error=True)


def resolve(call: ToolCallPart, tools: Mapping[str, Tool]) -> CallOutcome:
    """Find the tool and validate the arguments; problems become error results."""
    found = tools.get(call.name)
    if found is None:
        names = ", ".join(sorted(tools)) or "(none)"
        return CallOutcome(
            call,
            result=error_result(
                call,
                f"ERROR: there is no tool named {call.name!r}. Available tools: {names}.",
            ),
        )
    if call.raw_args is not None:
        return CallOutcome(
            call,
            result=error_result(
                call,
                f"ERROR: the arguments for tool {call.name!r} are not a valid JSON object: "
                f"{call.raw_args[:500]!r}. Send the arguments as one JSON object.",
            ),
        )
    try:
        args = found.validate(call.args)
    except ValidationError as exc:
        return CallOutcome(call, result=error_result(call, render_validation_error(found, exc)))
    return CallOutcome(call, tool=found, args=args)


async def _run_one(o: CallOutcome, ctx: ToolContext[Any] | None, runner: SyncRunner) -> None:
    assert o.tool is not None
    started = time.perf_counter()
    o.started = True
    try:
        value = await o.tool.call(o.args, ctx, runner)
        content, images = render_output(value, o.tool.max_output_chars)
        o.result = ToolResultPart(
            call_id=o.call.id, name=o.call.name, content=content, images=images
        )
    except asyncio.CancelledError:
        raise
    except ApprovalNeeded:
        o.pending = True
    except Exception as exc:
        o.result = error_result(o.call, render_exception(o.call.name, exc))
    o.duration = time.perf_counter() - started


async def run_prepared(
    batch: Batch,
    *,
    run_id: str,
    step: int,
    deps: Any,
    metadata: Mapping[str, Any],
    runner: SyncRunner,
    scope: RunScope | None = None,
    tainted: bool = False,
    untrusted: tuple[str, ...] | None = None,
    taint: Callable[[str], None] | None = None,
) -> None:
    """Run every validated, approved call concurrently; results are filled in place."""
    runnable = [o for o in batch.outcomes if o.result is None and not o.pending]

    def context(o: CallOutcome) -> ToolContext[Any] | None:
        if o.tool is None or o.tool.context_param is None:
            return None
        return ToolContext(
            run_id,
            o.call.id,
            o.call.name,
            step,
            deps,
            metadata,
            approved=o.approved,
            run=scope,
            tainted=tainted,
            untrusted=untrusted,
            taint=taint,
        )

    if len(runnable) == 1:
        await _run_one(runnable[0], context(runnable[0]), runner)
    elif runnable:
        async with asyncio.TaskGroup() as group:
            for o in runnable:
                group.create_task(_run_one(o, context(o), runner))
