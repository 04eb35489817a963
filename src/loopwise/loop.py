"""The ReAct loop: a ``while`` over steps, each ending in one outcome, and one place that
ends the run.

A step checks every budget (reserving the call), fits the context, calls the model, and
ends in a :data:`~loopwise.run.Outcome`: ``Continue`` (tools ran, or an invalid answer
goes back to the model), ``Final``, ``Paused`` (calls wait for a decision), ``Stopped``
(a limit, or cancelled) or ``Failed``. :func:`run_loop` matches it once; :func:`_end` is
the only place a run ends. The tool half of a step is :mod:`loopwise.loop_tools`; the
running run, its guard and hooks are :mod:`loopwise.run`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, assert_never

from .capabilities import CapabilityError, ModelRequest
from .context import output_reserve
from .events import (
    BudgetWarning,
    Event,
    ModelRequested,
    ModelResponded,
    ModelText,
    RunFinished,
    TextDelta,
)
from .limits import Stop
from .loop_tools import close_open_calls, output_retry, resume_calls, run_calls
from .messages import AssistantMessage, ToolCallPart, UserMessage
from .output import FINAL_ANSWER_TOOL, InvalidOutput
from .run import (
    Continue,
    Failed,
    Final,
    Outcome,
    Paused,
    RunContext,
    Stopped,
    Wake,
    checked,
)

__all__ = ["run_loop", "step"]

logger = logging.getLogger("loopwise")

Item = Event | Outcome | Wake


async def run_loop(run: RunContext, new_input: UserMessage | None) -> AsyncIterator[Event]:
    """The whole run: start its capabilities, settle waiting calls, step until an outcome
    other than ``Continue``, end. ``run.state`` holds the result afterwards."""
    run.state.status = "in_progress"
    outcome: Outcome = Continue()
    try:
        yield await _seen(run, run.started())
        await run.start_capabilities()
        phase = resume_calls(run, new_input)
        while isinstance(outcome, Continue):
            async for item in phase:
                for event in run.drain():  # from hooks and child runs, in order
                    yield await _seen(run, event)
                if isinstance(item, Continue | Final | Paused | Stopped | Failed):
                    outcome = item
                elif not isinstance(item, Wake):
                    yield await _seen(run, item)
            phase = step(run)
    except (GeneratorExit, asyncio.CancelledError):
        _settle(run, Stopped("cancelled"))
        await _quietly(run.end_capabilities())
        raise
    except Exception as exc:
        outcome = run.outcome_of(exc)
    async for event in _end(run, outcome):
        yield event


async def _seen(run: RunContext, event: Event) -> Event:
    """An event, after the capabilities' ``on_event`` hooks have seen it."""
    if run.observed:
        await run.on_event(event)
    return event


async def _quietly(work: Any) -> None:
    try:
        await work
    except BaseException:  # the run is already ending; its hooks' errors are logged
        logger.exception("run ending: a capability's end hook failed")


# -- one step -----------------------------------------------------------------------------


async def step(run: RunContext) -> AsyncIterator[Item]:
    """One step: budgets, context, one model call, then the turn's one outcome."""
    state, tracker = run.state, run.tracker
    max_tokens = run.settings.max_tokens
    if run.context_window is not None:
        max_tokens = output_reserve(run.context_window - run.tool_tokens, max_tokens)
        for event in await run.fit_context(max_tokens):
            yield event
    estimate = state.history.estimated(run.tool_tokens)
    reserve = tracker.check_model_call(estimate, max_tokens)
    if isinstance(reserve, Stop):
        yield Stopped(reserve.reason, reserve.detail)
        return
    settings = run.settings
    if reserve.max_tokens != settings.max_tokens:
        settings = replace(settings, max_tokens=reserve.max_tokens)
    request = await run.before_model(ModelRequest(state.messages, run.tool_defs, settings))
    yield ModelRequested(
        run_id=run.run_id,
        step=tracker.steps + 1,
        messages=len(request.messages),
        estimated_input_tokens=estimate,
        max_tokens=request.settings.max_tokens,
    )
    started = time.perf_counter()
    response: AssistantMessage | None = None
    async for piece in run.call_model(request):
        if isinstance(piece, str):
            yield TextDelta(run_id=run.run_id, step=tracker.steps + 1, text=piece)
        else:
            response = piece
    assert response is not None
    response = await run.after_model(checked(response))
    tracker.steps += 1
    spent_before = tracker.cost_usd
    tracker.record(response.usage)
    state.history.calibrate(estimate, response.usage.input_tokens)
    state.history.append(response)
    yield ModelResponded(
        run_id=run.run_id,
        step=tracker.steps,
        usage=response.usage,
        cost_usd=tracker.cost_usd - spent_before,
        total_usage=tracker.usage,
        total_cost_usd=tracker.cost_usd,
        finish_reason=response.finish_reason,
        duration=time.perf_counter() - started,
    )
    for limit, used, maximum in tracker.warnings():
        yield BudgetWarning(
            run_id=run.run_id, step=tracker.steps, limit=limit, used=used, maximum=maximum
        )
    if response.text:
        yield ModelText(
            run_id=run.run_id, step=tracker.steps, text=response.text, final=not response.tool_calls
        )
    async for item in _end_turn(run, response):
        yield item


async def _end_turn(run: RunContext, response: AssistantMessage) -> AsyncIterator[Item]:
    """A final answer, an invalid answer sent back, or the turn's tool calls."""
    calls = response.tool_calls
    if not calls:
        try:
            if response.finish_reason == "max_tokens":
                raise InvalidOutput(
                    "Your answer was cut off at the output limit. Give a shorter final answer."
                )
            yield Final(run.output.parse_text(response.text))
        except InvalidOutput as exc:
            for item in output_retry(run, exc.message):
                yield item
        return
    if len(calls) == 1 and _is_final(run, calls[0]):
        try:
            yield Final(run.output.parse_args(calls[0].args))
            return
        except InvalidOutput:
            pass  # answered as a tool result below, so the model sees the error in place
    async for item in run_calls(run, calls):
        yield item


def _is_final(run: RunContext, call: ToolCallPart) -> bool:
    return call.name == FINAL_ANSWER_TOOL and run.output.tool is not None and not call.raw_args


# -- the end --------------------------------------------------------------------------------


def _settle(run: RunContext, outcome: Outcome) -> None:
    """Write the outcome into the state; every call that started gets a result."""
    state = run.state
    state.stop_reason = state.error = state.detail = None
    match outcome:
        case Final(output=output):
            state.status, run.answer = "completed", output
            state.output = run.output.to_jsonable(output)
        case Paused():
            state.status, state.stop_reason = "input_required", "approval_required"
        case Stopped(reason=reason, detail=detail):
            state.status = "cancelled" if reason == "cancelled" else "incomplete"
            state.stop_reason, state.detail = reason, detail
        case Failed(reason=reason, error=error):
            state.status, state.stop_reason, state.error = "failed", reason, error
        case Continue():
            raise AssertionError("a run cannot end by continuing")
        case _:
            assert_never(outcome)
    if state.status != "input_required":
        state.pending = []
        close_open_calls(run, state.stop_reason or state.status)
    run.tracker.fold_time()
    run.tracker.release()  # a child's call cut short holds nothing
    run.runner.close()


async def _end(run: RunContext, outcome: Outcome) -> AsyncIterator[Event]:
    """The one place a run ends: settle the state, run the ``end`` hooks, ``run_finished``."""
    _settle(run, outcome)
    state = run.state
    try:
        await run.end_capabilities()
    except CapabilityError as exc:
        if state.status != "failed":
            state.status, state.stop_reason, state.error = "failed", "error", str(exc)
            state.detail, state.output, run.answer = None, None, None
    for event in run.drain():
        yield event
    finished = RunFinished(
        run_id=run.run_id,
        step=state.steps,
        status=state.status,
        stop_reason=state.stop_reason,
        output=state.output,
        error=state.error,
        usage=state.usage,
        cost_usd=state.cost_usd,
        steps=state.steps,
        duration=state.spend.seconds,
        parent_run_id=state.parent_run_id,
    )
    if run.observed:
        await _quietly(run.on_event(finished))
    yield finished
