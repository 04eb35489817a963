"""The loop's tool-call half: run a turn's calls, pass on child runs' events, record results.

A turn's calls are prepared (approvals decided or left pending), run under the run's guard,
and their results appended to the history; pending approvals pause the run, and the
repetition detector may nudge the model or stop it. On resume, the last turn's calls that
have no result yet are run first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from .approval import ApprovalRequest
from .events import (
    ApprovalRequested,
    Event,
    LoopDetected,
    ToolCalled,
    ToolResulted,
)
from .execute import Batch, prepare, run_prepared
from .messages import (
    AssistantMessage,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    UserMessage,
    UserPart,
)
from .output import FINAL_ANSWER_TOOL, InvalidOutput
from .run_state import RunConfig, RunState, finish, guard
from .scope import RunScope

__all__ = ["finish_pending_calls", "run_calls"]


def _final_answer_result(cfg: RunConfig, state: RunState, call: ToolCallPart) -> ToolResultPart:
    """The observation for a final-answer call that could not end the run."""
    if call.raw_args is not None:
        message = "ERROR: the final answer's arguments are not a valid JSON object."
    else:
        try:
            cfg.output.parse_args(call.args)
            message = (
                f"ERROR: {FINAL_ANSWER_TOOL!r} must be called alone, after the other tools "
                "have returned. Call it again on its own."
            )
        except InvalidOutput as exc:
            message = f"ERROR: {exc.message}"
    state.output_attempts += 1
    return ToolResultPart(call_id=call.id, name=call.name, content=message, is_error=True)


async def run_calls(
    cfg: RunConfig, state: RunState, calls: list[ToolCallPart], previous: list[ToolResultPart]
) -> AsyncIterator[Event]:
    """Run a turn's calls (those without a result in ``previous``) and record results."""
    tracker = state.tracker
    done = {r.call_id for r in previous}
    todo = [c for c in calls if c.id not in done]
    finals = {
        c.id: _final_answer_result(cfg, state, c)
        for c in todo
        if c.name == FINAL_ANSWER_TOOL and cfg.output.tool is not None
    }
    todo = [c for c in todo if c.id not in finals]
    stop = tracker.check_tool_calls(len(todo))
    if stop is not None:
        finish(cfg, state, "incomplete", stop.reason, stop.detail)
        return
    batch = await prepare(
        todo, cfg.tools, run_id=cfg.run_id, decisions=state.decisions, approve=cfg.approve
    )
    state.decisions.clear()
    for o in batch.outcomes:
        if not o.pending:
            yield ToolCalled(
                run_id=cfg.run_id,
                step=tracker.steps,
                call_id=o.call.id,
                name=o.call.name,
                args=o.call.args,
            )
    tracker.tool_calls += sum(1 for o in batch.outcomes if not o.pending)
    async for event in _run_batch(cfg, state, batch):
        yield event
    for o in batch.outcomes:
        if o.result is not None:
            yield ToolResulted(
                run_id=cfg.run_id,
                step=tracker.steps,
                call_id=o.call.id,
                name=o.call.name,
                content=o.result.content,
                is_error=o.result.is_error,
                duration=o.duration,
                images=len(o.result.images),
            )
    by_id = {r.call_id: r for r in [*previous, *batch.results, *finals.values()]}
    results = [by_id[c.id] for c in calls if c.id in by_id]
    async for event in _record_results(cfg, state, calls, results, batch):
        yield event


async def _run_batch(cfg: RunConfig, state: RunState, batch: Batch) -> AsyncIterator[Event]:
    """Run the batch's calls under the run's guard; events of child runs (agents used as
    tools) are passed on as they happen."""
    queue: asyncio.Queue[Event] = asyncio.Queue()
    scope = RunScope(
        cfg.run_id,
        state.tracker,
        cfg.depth,
        cfg.cancel,
        cfg.approve,
        queue.put_nowait,
        checkpoints=cfg.parent.checkpoints if cfg.parent is not None else None,
    )
    work = asyncio.ensure_future(
        guard(
            cfg,
            state,
            run_prepared(
                batch,
                run_id=cfg.run_id,
                step=state.tracker.steps,
                deps=cfg.deps,
                metadata=cfg.metadata,
                scope=scope,
            ),
        )
    )
    getter: asyncio.Future[Event] | None = None
    try:
        while not work.done():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({work, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            getter.cancel()
        while not queue.empty():
            yield queue.get_nowait()
        work.result()
    finally:
        if getter is not None:
            getter.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})


async def _record_results(
    cfg: RunConfig,
    state: RunState,
    calls: list[ToolCallPart],
    results: list[ToolResultPart],
    batch: Batch,
) -> AsyncIterator[Event]:
    parts: list[UserPart] = list(results)
    pending = batch.pending
    if pending:
        if parts:
            state.history.append(UserMessage(parts=tuple(parts)))
        for o in pending:
            yield ApprovalRequested(
                run_id=cfg.run_id,
                step=state.tracker.steps,
                call_id=o.call.id,
                name=o.call.name,
                args=o.call.args,
            )
        finish(
            cfg,
            state,
            "input_required",
            "approval_required",
            None,
            pending=[
                ApprovalRequest(cfg.run_id, o.call.id, o.call.name, dict(o.call.args))
                for o in pending
            ],
        )
        return
    finding = state.detector.observe(calls, results)
    if finding is not None:
        action: Literal["nudge", "stop"] = "stop" if finding.stop else "nudge"
        yield LoopDetected(
            run_id=cfg.run_id,
            step=state.tracker.steps,
            kind=finding.kind,
            detail=finding.detail,
            action=action,
        )
        if not finding.stop:
            parts.append(TextPart(text=state.detector.nudge(finding)))
    state.history.append(UserMessage(parts=tuple(parts)))
    if finding is not None and finding.stop:
        finish(cfg, state, "incomplete", "loop", finding.detail)
    elif state.output_attempts > cfg.output_retries:
        finish(
            cfg,
            state,
            "failed",
            "invalid_output",
            f"the final answer was still invalid after {cfg.output_retries} retries",
        )


async def finish_pending_calls(cfg: RunConfig, state: RunState) -> AsyncIterator[Event]:
    """On resume: run the last turn's calls that have no result yet (with decisions)."""
    msgs = state.history.messages
    last_assistant = next(
        (i for i in range(len(msgs) - 1, -1, -1) if isinstance(msgs[i], AssistantMessage)), None
    )
    if last_assistant is None:
        return
    assistant = msgs[last_assistant]
    assert isinstance(assistant, AssistantMessage)
    calls = assistant.tool_calls
    previous = [
        p
        for m in msgs[last_assistant + 1 :]
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]
    if not calls or len(previous) >= len(calls):
        return
    state.history.splice(last_assistant + 1, len(msgs), [])
    async for event in run_calls(cfg, state, calls, previous):
        yield event
