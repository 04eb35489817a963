"""The ReAct loop: one async generator that yields typed events.

Per step: check every budget (and reserve the call), fit the context, call the model, then
end the turn in exactly one outcome — run tools and continue, a final answer, a retry of
an invalid answer, or a stop — matched exhaustively. ``Agent.run``/``run_sync``/``stream``
are thin wrappers around :func:`run_steps`. Running a turn's tool calls is in
:mod:`loopwise.loop_tools`; the run's config and state are in :mod:`loopwise.run_state`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, assert_never

from .context import ContextOverflow, History, fit, transcript
from .errors import ModelError
from .events import (
    BudgetWarning,
    ContextCompacted,
    Event,
    ModelRequested,
    ModelResponded,
    ModelText,
    OutputRetry,
    RunFinished,
    TextDelta,
)
from .limits import Stop
from .loop_tools import finish_pending_calls, run_calls
from .messages import (
    AssistantMessage,
    AssistantPart,
    Message,
    ToolCallPart,
    UserMessage,
)
from .models import ModelSettings, StreamingModel
from .output import FINAL_ANSWER_TOOL, InvalidOutput
from .run_state import Cancelled, RunConfig, RunState, TimedOut, finish, guard

__all__ = ["RunConfig", "RunState", "run_steps"]

logger = logging.getLogger("loopwise")


# Each turn ends in exactly one of these.
@dataclass(frozen=True, slots=True)
class _CallTools:
    calls: list[ToolCallPart]


@dataclass(frozen=True, slots=True)
class _Final:
    output: Any


@dataclass(frozen=True, slots=True)
class _Retry:
    feedback: str


_Outcome = _CallTools | _Final | _Retry


async def run_steps(cfg: RunConfig, state: RunState) -> AsyncIterator[Event]:
    """Run the loop to the end; ``state.result`` holds the result afterwards."""
    try:
        async for event in finish_pending_calls(cfg, state):
            yield event
        while state.result is None:
            async for event in _step(cfg, state):
                yield event
    except Cancelled:
        finish(cfg, state, "cancelled", "cancelled", None)
    except TimedOut:
        finish(cfg, state, "incomplete", "timeout", f"max_seconds={_max_seconds(state)}")
    except ModelError as exc:
        finish(cfg, state, "failed", "error", str(exc))
    except ContextOverflow as exc:
        finish(cfg, state, "failed", "context_window", str(exc))
    except asyncio.CancelledError:
        finish(cfg, state, "cancelled", "cancelled", None)
        raise
    except Exception as exc:  # a bug in a model adapter or a callback: fail, keep the steps
        logger.exception("run %s failed with an unexpected error", cfg.run_id)
        finish(cfg, state, "failed", "error", f"{type(exc).__name__}: {exc}")
    result = state.result
    assert result is not None
    yield RunFinished(
        run_id=cfg.run_id,
        step=state.tracker.steps,
        status=result.status,
        stop_reason=result.stop_reason,
        output=cfg.output.to_jsonable(result.output) if result.output is not None else None,
        error=result.error,
        usage=result.usage,
        cost_usd=result.cost_usd,
        steps=result.steps,
        duration=result.duration,
        parent_run_id=cfg.parent_run_id,
    )


def _max_seconds(state: RunState) -> float | None:
    return state.tracker.budget.max_seconds


async def _step(cfg: RunConfig, state: RunState) -> AsyncIterator[Event]:
    tracker = state.tracker
    extra = cfg.tool_tokens
    if cfg.context_window is not None:
        async for event in _fit_context(cfg, state, extra):
            yield event
    estimate = state.history.estimated(extra)
    reserve = tracker.check_model_call(estimate, cfg.settings.max_tokens)
    if isinstance(reserve, Stop):
        finish(cfg, state, "incomplete", reserve.reason, reserve.detail)
        return
    yield ModelRequested(
        run_id=cfg.run_id,
        step=tracker.steps + 1,
        messages=len(state.history.messages),
        estimated_input_tokens=estimate,
        max_tokens=reserve.max_tokens,
    )
    settings = cfg.settings
    if reserve.max_tokens != settings.max_tokens:
        settings = ModelSettings(
            max_tokens=reserve.max_tokens,
            temperature=settings.temperature,
            stop_sequences=settings.stop_sequences,
            timeout=settings.timeout,
            tool_choice=settings.tool_choice,
        )
    started = time.perf_counter()
    response: AssistantMessage | None = None
    async for item in _call_model(cfg, state, settings):
        if isinstance(item, str):
            yield TextDelta(run_id=cfg.run_id, step=tracker.steps + 1, text=item)
        else:
            response = item
    assert response is not None
    response = _unique_call_ids(response)
    tracker.steps += 1
    spent_before = tracker.cost_usd
    tracker.record(response.usage)
    state.history.calibrate(estimate, response.usage.input_tokens)
    state.history.append(response)
    yield ModelResponded(
        run_id=cfg.run_id,
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
            run_id=cfg.run_id, step=tracker.steps, limit=limit, used=used, maximum=maximum
        )
    calls = response.tool_calls
    if response.text:
        yield ModelText(run_id=cfg.run_id, step=tracker.steps, text=response.text, final=not calls)
    async for event in _end_turn(cfg, state, _decide(cfg, response)):
        yield event


def _decide(cfg: RunConfig, response: AssistantMessage) -> _Outcome:
    calls = response.tool_calls
    if not calls:
        if response.finish_reason == "max_tokens":
            return _Retry(
                "Your answer was cut off at the output limit. Give a shorter final answer."
            )
        try:
            return _Final(cfg.output.parse_text(response.text))
        except InvalidOutput as exc:
            return _Retry(exc.message)
    finals = [c for c in calls if c.name == FINAL_ANSWER_TOOL and cfg.output.tool is not None]
    if finals and len(calls) == 1 and finals[0].raw_args is None:
        try:
            return _Final(cfg.output.parse_args(finals[0].args))
        except InvalidOutput:
            pass  # answered below as a tool result, so the model sees the error in place
    return _CallTools(calls)


async def _end_turn(cfg: RunConfig, state: RunState, outcome: _Outcome) -> AsyncIterator[Event]:
    match outcome:
        case _Final(output=output):
            finish(cfg, state, "completed", None, None, output=output)
        case _Retry(feedback=feedback):
            async for event in _retry_output(cfg, state, feedback):
                yield event
        case _CallTools(calls=calls):
            async for event in run_calls(cfg, state, calls, previous=[]):
                yield event
        case _:
            assert_never(outcome)


async def _retry_output(cfg: RunConfig, state: RunState, feedback: str) -> AsyncIterator[Event]:
    state.output_attempts += 1
    yield OutputRetry(
        run_id=cfg.run_id, step=state.tracker.steps, error=feedback, attempt=state.output_attempts
    )
    if state.output_attempts > cfg.output_retries:
        finish(
            cfg,
            state,
            "failed",
            "invalid_output",
            f"the final answer was still invalid after {cfg.output_retries} retries: {feedback}",
        )
        return
    state.history.append(UserMessage.text(f"[loopwise] {feedback}"))


async def _fit_context(cfg: RunConfig, state: RunState, extra: int) -> AsyncIterator[Event]:
    assert cfg.context_window is not None

    async def summarise(messages: list[Message]) -> str | None:
        return await _summarise(cfg, state, messages)

    done = await fit(
        state.history,
        window=cfg.context_window - extra,
        reserved=cfg.settings.max_tokens,
        policy=cfg.context_policy,
        summarise=summarise,
    )
    for c in done:
        yield ContextCompacted(
            run_id=cfg.run_id,
            step=state.tracker.steps,
            strategy=c.strategy,  # type: ignore[arg-type]
            tokens_before=c.tokens_before,
            tokens_after=c.tokens_after,
        )


async def _summarise(cfg: RunConfig, state: RunState, messages: list[Message]) -> str | None:
    """Ask the model for a summary of older turns, within the budget and the window."""
    assert cfg.context_window is not None
    policy = cfg.context_policy
    max_chars = max((cfg.context_window // 2) * 3, 1000)
    prompt = (
        "Summarise the work below for your own later use: the facts learned, tool results "
        "that matter, what was tried and failed, and what remains. Be concise.\n\n"
        + transcript(messages, max_chars)
    )
    request = [UserMessage.text(prompt)]
    estimate = History.of(request).estimated()
    reserve = state.tracker.check_model_call(estimate, policy.summary_tokens)
    if isinstance(reserve, Stop):
        return None
    settings = ModelSettings(max_tokens=reserve.max_tokens, tool_choice="none")
    try:
        response = await guard(cfg, state, cfg.model.request(request, [], settings))
    except ModelError:
        return None
    state.tracker.record(response.usage)
    return response.text.strip() or None


async def _call_model(
    cfg: RunConfig, state: RunState, settings: ModelSettings
) -> AsyncIterator[str | AssistantMessage]:
    messages = state.history.messages
    if cfg.stream_text and isinstance(cfg.model, StreamingModel):
        stream = cfg.model.stream(messages, cfg.tool_defs, settings)
        try:
            while True:
                try:
                    item = await guard(cfg, state, anext(stream))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
    else:
        yield await guard(cfg, state, cfg.model.request(messages, cfg.tool_defs, settings))


def _unique_call_ids(response: AssistantMessage) -> AssistantMessage:
    """Give repeated tool-call ids in one response distinct ids (some servers reuse them)."""
    calls = response.tool_calls
    if len({c.id for c in calls}) == len(calls):
        return response
    seen: set[str] = set()
    parts: list[AssistantPart] = []
    for i, p in enumerate(response.parts):
        if isinstance(p, ToolCallPart):
            if p.id in seen or not p.id:
                p = replace(p, id=f"{p.id or 'call'}_{i}")
            seen.add(p.id)
        parts.append(p)
    return replace(response, parts=tuple(parts))
