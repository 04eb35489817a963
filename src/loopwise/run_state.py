"""A run's fixed config and changing state, and what every part of the loop does with them.

:func:`guard` awaits model and tool work under the run's cancel event and time budget;
:func:`finish` ends the run with its :class:`~loopwise.result.RunResult`. The loop
(:mod:`loopwise.loop`) and its tool-call half (:mod:`loopwise.loop_tools`) share them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .approval import ApprovalCallback, ApprovalRequest, Decision
from .context import ContextPolicy, History, tools_tokens
from .limits import BudgetTracker
from .messages import ToolDefinition
from .models import Model, ModelSettings
from .output import OutputSpec
from .repetition import LoopDetector
from .result import RunResult, RunStatus
from .scope import RunScope
from .tools import Tool

__all__ = ["Cancelled", "RunConfig", "RunState", "TimedOut", "finish", "guard"]


@dataclass(slots=True)
class RunConfig:
    """What stays fixed during a run."""

    run_id: str
    agent_name: str | None
    model: Model
    tools: Mapping[str, Tool]
    output: OutputSpec[Any]
    settings: ModelSettings
    context_window: int | None
    context_policy: ContextPolicy
    approve: ApprovalCallback | None
    deps: Any
    output_retries: int
    cancel: asyncio.Event | None = None
    stream_text: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    parent: RunScope | None = None
    """The run that started this one as a tool (see :mod:`loopwise.scope`)."""
    tool_defs: list[ToolDefinition] = field(default_factory=list)
    tool_tokens: int = 0

    def __post_init__(self) -> None:
        self.tool_defs = [t.definition() for t in self.tools.values()]
        if self.output.tool is not None:
            self.tool_defs.append(self.output.tool)
        self.tool_tokens = tools_tokens(self.tool_defs)

    @property
    def parent_run_id(self) -> str | None:
        return self.parent.run_id if self.parent is not None else None

    @property
    def depth(self) -> int:
        return self.parent.depth + 1 if self.parent is not None else 0


@dataclass(slots=True)
class RunState:
    """What changes during a run; plain data, so a paused run can be resumed."""

    history: History
    tracker: BudgetTracker
    detector: LoopDetector
    decisions: dict[str, Decision] = field(default_factory=dict)
    output_attempts: int = 0
    result: RunResult[Any] | None = None


class Cancelled(Exception):
    """The run's cancel event was set while :func:`guard` waited."""


class TimedOut(Exception):
    """The run's time budget ran out while :func:`guard` waited."""


async def guard(cfg: RunConfig, state: RunState, awaitable: Any) -> Any:
    """Await with the run's cancel event and time budget; cancel the work cleanly."""
    remaining = state.tracker.remaining_seconds()
    if cfg.cancel is None and remaining is None:
        return await awaitable
    if cfg.cancel is not None and cfg.cancel.is_set():
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        raise Cancelled
    work = asyncio.ensure_future(awaitable)
    waiters: set[asyncio.Future[Any]] = {work}
    stopper = asyncio.ensure_future(cfg.cancel.wait()) if cfg.cancel is not None else None
    if stopper is not None:
        waiters.add(stopper)
    try:
        done, _ = await asyncio.wait(
            waiters,
            timeout=None if remaining is None else max(remaining, 0),
            return_when=asyncio.FIRST_COMPLETED,
        )
    except asyncio.CancelledError:
        work.cancel()
        await asyncio.wait({work})
        raise
    finally:
        if stopper is not None:
            stopper.cancel()
    if work in done:
        return work.result()
    work.cancel()
    await asyncio.wait({work})  # let tools finish their cleanup; their error is not ours
    if stopper is not None and stopper in done:
        raise Cancelled
    raise TimedOut


def finish(
    cfg: RunConfig,
    state: RunState,
    status: RunStatus,
    reason: str | None,
    error: str | None,
    *,
    output: Any = None,
    pending: list[ApprovalRequest] | None = None,
) -> None:
    """End the run: ``state.result`` gets the status, reason and what the run used."""
    t = state.tracker
    state.result = RunResult(
        run_id=cfg.run_id,
        status=status,
        output=output,
        stop_reason=reason,
        error=error if status == "failed" else None,
        detail=error if status != "failed" else None,
        usage=t.usage,
        cost_usd=t.cost_usd,
        steps=t.steps,
        tool_calls=t.tool_calls,
        duration=t.elapsed(),
        messages=list(state.history.messages),
        pending_approvals=pending or [],
        model=f"{cfg.model.provider}:{cfg.model.model_name}",
        parent_run_id=cfg.parent_run_id,
    )
