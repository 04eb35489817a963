"""The tool half of a step: decide each call, run the allowed ones, record every result.

Each call is resolved and validated (:mod:`loopwise.execute`), then decided: the tool's own
approval rule and the capabilities' ``before_tool`` verdicts; an ``Ask`` is answered by a
decision in the state, else by an approver, else the call waits and the step ends
``Paused``. What ran is recorded: when an approver or a capability changed the arguments,
the transcript and the ``tool_call`` event carry what ran and the original. Every call
that started has a result in the transcript, whatever ends the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from pydantic_core import ValidationError

from .approval import ApprovalRequest, Approve, Decision, Reject
from .capabilities import Ask, Deny, Rewrite, ToolCall
from .events import ApprovalRequested, Event, LoopDetected, OutputRetry, ToolCalled, ToolResulted
from .execute import Batch, CallOutcome, error_result, resolve, run_prepared
from .messages import (
    AssistantMessage,
    DocumentPart,
    ImagePart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    UserMessage,
    UserPart,
)
from .output import FINAL_ANSWER_TOOL, InvalidOutput
from .run import WAKE, Continue, Failed, Outcome, Paused, RunContext, Stopped, Wake
from .state import PendingCall
from .tools import render_validation_error

__all__ = ["close_open_calls", "output_retry", "resume_calls", "run_calls"]

Item = Event | Outcome | Wake
NO_DECISION = "no decision was given for this call before the conversation went on"


# -- invalid final answers ------------------------------------------------------------------


def _count_retry(run: RunContext, feedback: str) -> tuple[OutputRetry, bool]:
    """Count one invalid answer; the event, and whether the retries are used up."""
    state = run.state
    state.output_attempts += 1
    event = OutputRetry(
        run_id=run.run_id, step=state.steps, error=feedback, attempt=state.output_attempts
    )
    return event, state.output_attempts > run.output_retries


def _retries_used(run: RunContext, feedback: str) -> Failed:
    return Failed(
        "invalid_output",
        f"the final answer was still invalid after {run.output_retries} retries: {feedback}",
    )


def output_retry(run: RunContext, feedback: str) -> list[Item]:
    """An invalid answer given as text: the model is told why, or the run fails."""
    event, used_up = _count_retry(run, feedback)
    if used_up:
        return [event, _retries_used(run, feedback)]
    run.state.history.append(UserMessage.text(f"[loopwise] {feedback}"))
    return [event, Continue()]


def _final_answer_result(run: RunContext, call: ToolCallPart) -> tuple[ToolResultPart, Event]:
    """The observation for a final-answer call that could not end the run."""
    if call.raw_args is not None:
        message = "the final answer's arguments are not a valid JSON object."
    else:
        try:
            run.output.parse_args(call.args)
            message = (
                f"{FINAL_ANSWER_TOOL!r} must be called alone, after the other tools have "
                "returned. Call it again on its own."
            )
        except InvalidOutput as exc:
            message = exc.message
    event, _ = _count_retry(run, message)
    return error_result(call, f"ERROR: {message}"), event


# -- deciding calls -------------------------------------------------------------------------


async def _decide(
    run: RunContext, o: CallOutcome, decisions: Mapping[str, Decision]
) -> PendingCall | None:
    """Settle one validated call: allowed, denied, rewritten, decided, or left pending."""
    assert o.tool is not None
    call = ToolCall(o.call, o.tool, o.args)
    verdict = await run.verdict(call, o.tool.needs_approval(o.args))
    if isinstance(verdict, Deny):
        o.result = error_result(
            o.call, f"ERROR: the call to {o.call.name!r} was denied: {verdict.reason}"
        )
        return None
    if isinstance(verdict, Rewrite) and not _set_args(o, verdict.arguments, "a policy"):
        return None
    if (
        isinstance(verdict, Ask)
        and call.args is not o.args
        and not _set_args(o, call.args, "a policy")
    ):
        return None
    decision = decisions.get(o.call.id)
    if decision is None and not isinstance(verdict, Ask):
        return None
    if decision is None:
        assert isinstance(verdict, Ask)
        request = ApprovalRequest(run.run_id, o.call.id, o.call.name, dict(o.args))
        decision = await run.decide(request)
        if decision is None:
            o.pending = True
            return PendingCall(o.call.id, o.call.name, dict(o.args), verdict.reason)
    _apply(o, decision)
    return None


def _set_args(o: CallOutcome, arguments: Mapping[str, object], who: str) -> bool:
    """Validate changed arguments; an invalid change becomes the call's error result."""
    assert o.tool is not None
    try:
        o.args = o.tool.validate(dict(arguments))
        o.edited = dict(arguments)
    except ValidationError as exc:
        o.result = error_result(
            o.call,
            f"ERROR: {who} changed the arguments, and the new ones are invalid. "
            + render_validation_error(o.tool, exc),
        )
        return False
    return True


def _apply(o: CallOutcome, decision: Decision) -> None:
    o.approved = isinstance(decision, Approve)
    if isinstance(decision, Reject):
        o.result = error_result(
            o.call,
            f"ERROR: the call to {o.call.name!r} was rejected by the user: {decision.reason}. "
            "Do not retry it unchanged; find another way or explain in your answer.",
        )
    elif decision.arguments is not None:
        _set_args(o, decision.arguments, "the approver")


async def _prepare(
    run: RunContext, calls: Sequence[ToolCallPart], decisions: Mapping[str, Decision]
) -> tuple[Batch, list[PendingCall]]:
    outcomes = [resolve(c, run.tools) for c in calls]
    pending: list[PendingCall] = []
    for o in outcomes:
        if o.tool is not None and o.result is None:
            waiting = await _decide(run, o, decisions)
            if waiting is not None:
                pending.append(waiting)
    return Batch(outcomes), pending


def _what_ran(run: RunContext, batch: Batch) -> None:
    """Where arguments were changed, the transcript's call holds what runs (and the
    model's original)."""
    changed = {
        o.call.id: o.edited
        for o in batch.outcomes
        if o.edited is not None and not o.pending and o.result is None
    }
    if not changed:
        return
    history = run.state.history
    index = _last_assistant(run)
    assert index is not None
    message = history.messages[index]
    assert isinstance(message, AssistantMessage)
    parts = tuple(
        replace(p, args=changed[p.id], original_args=p.original_args or p.args)
        if isinstance(p, ToolCallPart) and p.id in changed
        else p
        for p in message.parts
    )
    history.replace(index, replace(message, parts=parts))
    for o in batch.outcomes:
        if o.call.id in changed:
            o.call = replace(o.call, args=changed[o.call.id], original_args=o.call.args)


# -- running a turn ------------------------------------------------------------------------


async def run_calls(
    run: RunContext,
    calls: list[ToolCallPart],
    previous: Sequence[ToolResultPart] = (),
    decisions: Mapping[str, Decision] | None = None,
) -> AsyncIterator[Item]:
    """Run a turn's calls (those without a result in ``previous``) and record the results."""
    done = {r.call_id for r in previous}
    todo = [c for c in calls if c.id not in done]
    finals: dict[str, ToolResultPart] = {}
    for c in todo:
        if c.name == FINAL_ANSWER_TOOL and run.output.tool is not None:
            finals[c.id], event = _final_answer_result(run, c)
            yield event
    todo = [c for c in todo if c.id not in finals]
    stop = run.tracker.check_tool_calls(len(todo))
    if stop is not None:
        _keep(run, [*previous, *finals.values()])
        yield Stopped(stop.reason, stop.detail)
        return
    batch = Batch([])
    try:
        batch, pending = await _prepare(run, todo, decisions or {})
        _what_ran(run, batch)
        for event in _called(run, batch):
            yield event
        async for wake in _run_batch(run, batch):
            yield wake
        for o in batch.outcomes:
            if o.started and o.result is not None:
                assert o.tool is not None
                o.result = await run.after_tool(ToolCall(o.call, o.tool, o.args), o.result)
            if o.result is not None:
                yield _resulted(run, o)
                _taint_by(run, o)
    except BaseException:  # cancelled, timed out, a hook failed: keep what finished
        _keep(run, [*previous, *batch.results, *finals.values()])
        for o in batch.outcomes:
            _taint_by(run, o)
        raise
    by_id = {r.call_id: r for r in [*previous, *batch.results, *finals.values()]}
    ordered = [by_id[c.id] for c in calls if c.id in by_id]
    for item in _record(run, calls, ordered, [*pending, *_interrupted(batch)]):
        yield item


def _called(run: RunContext, batch: Batch) -> list[Event]:
    """``tool_call`` events for the calls about to run (each counted as a tool call)."""
    events: list[Event] = []
    for o in batch.outcomes:
        if o.tool is not None and not o.pending and o.result is None:
            events.append(
                ToolCalled(
                    run_id=run.run_id,
                    step=run.state.steps,
                    call_id=o.call.id,
                    name=o.call.name,
                    args=o.call.args,
                    original_args=o.call.original_args,
                )
            )
    run.tracker.tool_calls += len(events)
    return events


def _taint_by(run: RunContext, o: CallOutcome) -> None:
    """A result of an untrusted tool that ran taints the run."""
    if o.started and o.result is not None and o.tool is not None and not o.tool.trusted:
        run.taint(f"tool:{o.call.name}:{o.call.id}")


def _keep(run: RunContext, results: Sequence[ToolResultPart]) -> None:
    """Put results that exist after the last turn's calls (the rest are closed later)."""
    index = _last_assistant(run)
    if results and index is not None:
        _merge_after(run, index, results)


def _interrupted(batch: Batch) -> list[PendingCall]:
    """Calls whose tool turned them into pending approvals while running."""
    return [
        PendingCall(o.call.id, o.call.name, dict(o.args), "interrupted")
        for o in batch.outcomes
        if o.pending and o.started
    ]


def _resulted(run: RunContext, o: CallOutcome) -> ToolResulted:
    assert o.result is not None
    return ToolResulted(
        run_id=run.run_id,
        step=run.state.steps,
        call_id=o.call.id,
        name=o.call.name,
        content=o.result.content,
        is_error=o.result.is_error,
        duration=o.duration,
        images=len(o.result.images),
    )


async def _run_batch(run: RunContext, batch: Batch) -> AsyncIterator[Wake]:
    """Run the batch under the run's guard; events of child runs are passed on live."""
    runnable = [o for o in batch.outcomes if o.result is None and not o.pending]
    if not runnable:
        return
    prepared = run_prepared(
        batch,
        run_id=run.run_id,
        step=run.state.steps,
        deps=run.deps,
        metadata=run.metadata,
        runner=run.runner,
        scope=run.scope(),
        tainted=run.state.tainted,
        untrusted=tuple(run.state.untrusted),
        taint=run.taint,
    )
    if all(o.tool is not None and o.tool.context_param is None for o in runnable):
        await run.guard(prepared)  # no tool can start a child run: nothing to pass on live
        return
    wake = run._wake = asyncio.Event()
    work = asyncio.ensure_future(run.guard(prepared))
    try:
        while not work.done():
            waiter = asyncio.ensure_future(wake.wait())
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            wake.clear()
            yield WAKE  # the loop passes on what child runs emitted, in order
        yield WAKE
        work.result()
    finally:
        run._wake = None
        if not work.done():
            work.cancel()
            await asyncio.wait({work})


def _record(
    run: RunContext,
    calls: list[ToolCallPart],
    results: list[ToolResultPart],
    pending: list[PendingCall],
) -> list[Item]:
    """Append the turn's results; pause, nudge or stop as the turn requires."""
    state = run.state
    parts: list[UserPart] = list(results)
    if pending:
        if parts:
            state.history.append(UserMessage(parts=tuple(parts)))
        state.pending = pending
        items: list[Item] = [
            ApprovalRequested(
                run_id=run.run_id,
                step=state.steps,
                call_id=p.call_id,
                name=p.tool,
                args=p.args,
                reason=p.reason,
            )
            for p in pending
        ]
        return [*items, Paused()]
    out: list[Item] = []
    finding = run.detector.observe(calls, results)
    if finding is not None:
        action: Literal["nudge", "stop"] = "stop" if finding.stop else "nudge"
        out.append(
            LoopDetected(
                run_id=run.run_id,
                step=state.steps,
                kind=finding.kind,
                detail=finding.detail,
                action=action,
            )
        )
        if not finding.stop:
            parts.append(TextPart(text=run.detector.nudge(finding)))
    state.history.append(UserMessage(parts=tuple(parts)))
    if finding is not None and finding.stop:
        out.append(Stopped("loop", finding.detail))
    elif state.output_attempts > run.output_retries:
        out.append(_retries_used(run, "see the last tool results"))
    else:
        out.append(Continue())
    return out


# -- resuming and closing ------------------------------------------------------------------


def _last_assistant(run: RunContext) -> int | None:
    msgs = run.state.messages
    return next(
        (i for i in range(len(msgs) - 1, -1, -1) if isinstance(msgs[i], AssistantMessage)), None
    )


def _open_calls(run: RunContext) -> tuple[int, list[ToolCallPart], list[ToolResultPart]] | None:
    """The last turn's calls and the results they have, when some have none."""
    index = _last_assistant(run)
    if index is None:
        return None
    msgs = run.state.messages
    assistant = msgs[index]
    assert isinstance(assistant, AssistantMessage)
    calls = assistant.tool_calls
    results = [
        p
        for m in msgs[index + 1 :]
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]
    answered = {r.call_id for r in results}
    if all(c.id in answered for c in calls):
        return None
    return index, calls, results


def close_open_calls(run: RunContext, why: str) -> None:
    """Give every call of the last turn that has no result one saying it did not finish."""
    found = _open_calls(run)
    if found is None:
        return
    index, calls, results = found
    answered = {r.call_id for r in results}
    closing = [
        error_result(c, f"ERROR: no result: the run ended ({why}) before this call finished.")
        for c in calls
        if c.id not in answered
    ]
    _merge_after(run, index, closing)


def _merge_after(run: RunContext, index: int, results: Sequence[ToolResultPart]) -> None:
    """Put ``results`` in the user message after the assistant message at ``index``."""
    history = run.state.history
    msgs = history.messages
    follow = msgs[index + 1] if index + 1 < len(msgs) else None
    if isinstance(follow, UserMessage):
        old = [p for p in follow.parts if isinstance(p, ToolResultPart)]
        rest = [p for p in follow.parts if not isinstance(p, ToolResultPart)]
        history.replace(index + 1, UserMessage(parts=(*old, *results, *rest)))
    else:
        history.splice(index + 1, index + 1, [UserMessage(parts=tuple(results))])


async def resume_calls(run: RunContext, new_input: UserMessage | None) -> AsyncIterator[Item]:
    """Before the first step: run the waiting calls with their decisions (with new input, a
    call left undecided is not run), close any other open call, then add the new input."""
    state = run.state
    outcome: Outcome = Continue()
    if state.pending:
        decisions: dict[str, Decision] = {
            p.call_id: p.decision or Reject(NO_DECISION) for p in state.pending
        }
        state.pending = []
        found = _open_calls(run)
        if found is not None:
            index, calls, previous = found
            run.state.history.splice(index + 1, len(run.state.messages), [])
            async for item in run_calls(run, calls, previous, decisions):
                if isinstance(item, Continue | Paused | Stopped | Failed):
                    outcome = item
                else:
                    yield item
    if isinstance(outcome, Continue):
        close_open_calls(run, NO_DECISION)
        if new_input is not None:
            _add_input(run, new_input)
    yield outcome


def _add_input(run: RunContext, message: UserMessage) -> None:
    """New input after the last message (joined to a message of tool results, so the
    roles keep alternating). A document or an image in it is third-party content: it taints
    the run."""
    for part in message.parts:
        if isinstance(part, DocumentPart | ImagePart):
            run.taint(f"input:{part.type}")
    history = run.state.history
    last = history.messages[-1] if history.messages else None
    if isinstance(last, UserMessage) and any(isinstance(p, ToolResultPart) for p in last.parts):
        history.replace(len(history.messages) - 1, UserMessage(parts=(*last.parts, *message.parts)))
    else:
        history.append(message)
