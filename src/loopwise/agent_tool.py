"""An agent used as a tool by another agent: the parent sees an answer or an error, never
the child's transcript.

The child runs inside the parent's scope (:class:`~loopwise.scope.RunScope`): each of its
model calls first holds its worst case from the parent's remaining budget, cancelling the
parent cancels it, its events (with ``parent_run_id`` and ``depth``) flow into the parent's
event stream, and it inherits what the parent's capabilities hand down (``for_child``): the
parent's approver, a durable run's checkpoints (a child cut short by a crash replays its
finished calls), tracing.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .events import RunFinished
from .tools import DEFAULT_MAX_OUTPUT_CHARS, Tool, ToolContext, ToolFailed, tool

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .agent import Agent
    from .limits import Budget
    from .result import RunResult

__all__ = ["agent_tool", "child_error", "run_child"]


def agent_tool(
    agent: Agent[Any, Any],
    *,
    name: str | None = None,
    description: str | None = None,
    input_type: type[BaseModel] | None = None,
    budget: Budget | None = None,
    timeout: float | None = None,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> Tool:
    """Make ``agent`` a tool: the model passes a ``task`` (and, with ``input_type``, an
    ``input`` object of that pydantic type); the tool returns the child's final answer
    (structured output as JSON) or an error observation with the child's status and reason.

    ``budget`` limits the child on its own, inside what the parent has left; ``name``
    defaults to the agent's name, ``description`` to the start of its system prompt.
    """
    tool_name = name or agent.name
    if not tool_name or not tool_name.replace("_", "").replace("-", "").isalnum():
        raise UsageError(
            f"An agent used as a tool needs a name of letters, digits, '_' or '-', got "
            f"{tool_name!r}: pass name= or give the agent one."
        )
    about = description or _describe(agent, tool_name)
    make = tool(  # the child is policed by what its parent's capabilities hand down
        name=tool_name,
        description=about,
        timeout=timeout,
        max_output_chars=max_output_chars,
        effects=["read"],
    )

    async def ask(ctx: ToolContext[Any], task: str) -> str:
        """Args:
        task: The task for this agent, complete and self-contained.
        """
        return render_output(tool_name, await run_child(agent, ctx, task, budget=budget))

    if input_type is None:
        return make(ask)

    async def ask_with_input(ctx: ToolContext[Any], task: str, input: Any = None) -> str:
        """Args:
        task: The task for this agent, complete and self-contained.
        input: Structured input for the task.
        """
        text = task if input is None else f"{task}\n\nInput (JSON):\n{input.model_dump_json()}"
        return render_output(tool_name, await run_child(agent, ctx, text, budget=budget))

    ask_with_input.__annotations__["input"] = input_type | None
    return make(ask_with_input)


async def run_child(
    agent: Agent[Any, Any], ctx: ToolContext[Any], task: str, *, budget: Budget | None = None
) -> RunResult[Any]:
    """Run ``agent`` on ``task`` as a child of the run that called the tool ``ctx`` belongs
    to; its events go to the parent's stream. Outside a loop it runs on its own."""
    scope = ctx.run
    run_id = f"{ctx.run_id}.{ctx.call_id}"
    stream = agent.stream(
        task,
        run_id=run_id,
        budget=budget,
        metadata=ctx.metadata,
        cancel=scope.cancel if scope is not None else None,
        parent=scope,
        text_deltas=False,
    )
    emit = scope.emit if scope is not None else None
    try:
        async for event in stream:
            if emit is not None:
                emit(event)
    except asyncio.CancelledError:  # the parent was cancelled: say how the child ended
        if emit is not None:
            emit(_finished(stream.result))
        raise
    return stream.result


def _finished(r: RunResult[Any]) -> RunFinished:
    return RunFinished(
        run_id=r.run_id,
        step=r.steps,
        status=r.status,
        stop_reason=r.stop_reason,
        output=None,
        error=r.error,
        usage=r.usage,
        cost_usd=r.cost_usd,
        steps=r.steps,
        duration=r.duration,
        parent_run_id=r.parent_run_id,
    )


def render_output(tool_name: str, result: RunResult[Any]) -> str:
    """The child's answer as the parent's observation; a run that did not complete raises
    :class:`~loopwise.tools.ToolFailed` with :func:`child_error`."""
    if result.status != "completed":
        raise ToolFailed(child_error(tool_name, result))
    out: Any = result.output
    if isinstance(out, str):
        return out
    dump = getattr(out, "model_dump_json", None)
    if dump is not None:
        return str(dump())
    return json.dumps(out, ensure_ascii=False, default=str)


def child_error(tool_name: str, result: RunResult[Any]) -> str:
    """One clean observation for a child that did not complete: status, reason, detail."""
    why = result.error or result.detail or ""
    reason = f" ({result.stop_reason})" if result.stop_reason else ""
    text = f"ERROR: agent {tool_name!r} ended {result.status}{reason}"
    if result.status == "input_required":
        names = ", ".join(p.tool_name for p in result.pending_approvals)
        why = f"its calls to {names} need approval and no approver was given"
    hint = "Do not retry the same task unchanged; answer with what you have or change the task."
    return f"{text}: {why}. {hint}" if why else f"{text}. {hint}"


def _describe(agent: Agent[Any, Any], name: str) -> str:
    first = (agent.system or "").strip().split("\n\n")[0].strip()
    about = first[:500] if first else f"The {name} agent."
    return f"Ask the {name} agent to do a task; it answers with its result. {about}"
