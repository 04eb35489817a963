"""The ReAct loop: one async generator that yields typed events.

Per step: check every budget (and reserve the call), fit the context, call the model, then
end the turn in exactly one outcome — run tools and continue, a final answer, a retry of
an invalid answer, or a stop — matched exhaustively. ``Agent.run``/``run_sync``/``stream``
are thin wrappers around :func:`run_steps`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, assert_never

from .approval import ApprovalCallback, ApprovalRequest, Decision
from .context import ContextOverflow, ContextPolicy, History, fit, tools_tokens, transcript
from .errors import ModelError
from .events import (
    ApprovalRequested,
    BudgetWarning,
    ContextCompacted,
    Event,
    LoopDetected,
    ModelRequested,
    ModelResponded,
    ModelText,
    OutputRetry,
    RunFinished,
    TextDelta,
    ToolCalled,
    ToolResulted,
)
from .execute import Batch, prepare, run_prepared
from .limits import BudgetTracker, Stop
from .messages import (
    AssistantMessage,
    AssistantPart,
    Message,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    UserMessage,
    UserPart,
)
from .models import Model, ModelSettings, StreamingModel
from .output import FINAL_ANSWER_TOOL, InvalidOutput, OutputSpec
from .repetition import LoopDetector
from .result import RunResult, RunStatus
from .scope import RunScope
from .tools import Tool

__all__ = ["RunConfig", "RunState", "run_steps"]

logger = logging.getLogger("loopwise")


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


class _Cancelled(Exception):
    pass


class _TimedOut(Exception):
    pass


async def run_steps(cfg: RunConfig, state: RunState) -> AsyncIterator[Event]:
    """Run the loop to the end; ``state.result`` holds the result afterwards."""
    try:
        async for event in _finish_pending_calls(cfg, state):
            yield event
        while state.result is None:
            async for event in _step(cfg, state):
                yield event
    except _Cancelled:
        _finish(cfg, state, "cancelled", "cancelled", None)
    except _TimedOut:
        _finish(cfg, state, "incomplete", "timeout", f"max_seconds={_max_seconds(state)}")
    except ModelError as exc:
        _finish(cfg, state, "failed", "error", str(exc))
    except ContextOverflow as exc:
        _finish(cfg, state, "failed", "context_window", str(exc))
    except asyncio.CancelledError:
        _finish(cfg, state, "cancelled", "cancelled", None)
        raise
    except Exception as exc:  # a bug in a model adapter or a callback: fail, keep the steps
        logger.exception("run %s failed with an unexpected error", cfg.run_id)
        _finish(cfg, state, "failed", "error", f"{type(exc).__name__}: {exc}")
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
        _finish(cfg, state, "incomplete", reserve.reason, reserve.detail)
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
            _finish(cfg, state, "completed", None, None, output=output)
        case _Retry(feedback=feedback):
            async for event in _retry_output(cfg, state, feedback):
                yield event
        case _CallTools(calls=calls):
            async for event in _run_calls(cfg, state, calls, previous=[]):
                yield event
        case _:
            assert_never(outcome)


async def _retry_output(cfg: RunConfig, state: RunState, feedback: str) -> AsyncIterator[Event]:
    state.output_attempts += 1
    yield OutputRetry(
        run_id=cfg.run_id, step=state.tracker.steps, error=feedback, attempt=state.output_attempts
    )
    if state.output_attempts > cfg.output_retries:
        _finish(
            cfg,
            state,
            "failed",
            "invalid_output",
            f"the final answer was still invalid after {cfg.output_retries} retries: {feedback}",
        )
        return
    state.history.append(UserMessage.text(f"[loopwise] {feedback}"))


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


async def _run_calls(
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
        _finish(cfg, state, "incomplete", stop.reason, stop.detail)
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
        _guard(
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
        _finish(
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
        _finish(cfg, state, "incomplete", "loop", finding.detail)
    elif state.output_attempts > cfg.output_retries:
        _finish(
            cfg,
            state,
            "failed",
            "invalid_output",
            f"the final answer was still invalid after {cfg.output_retries} retries",
        )


async def _finish_pending_calls(cfg: RunConfig, state: RunState) -> AsyncIterator[Event]:
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
    async for event in _run_calls(cfg, state, calls, previous):
        yield event


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
        response = await _guard(cfg, state, cfg.model.request(request, [], settings))
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
                    item = await _guard(cfg, state, anext(stream))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
    else:
        yield await _guard(cfg, state, cfg.model.request(messages, cfg.tool_defs, settings))


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


async def _guard(cfg: RunConfig, state: RunState, awaitable: Any) -> Any:
    """Await with the run's cancel event and time budget; cancel the work cleanly."""
    remaining = state.tracker.remaining_seconds()
    if cfg.cancel is None and remaining is None:
        return await awaitable
    if cfg.cancel is not None and cfg.cancel.is_set():
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        raise _Cancelled
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
        raise _Cancelled
    raise _TimedOut


def _finish(
    cfg: RunConfig,
    state: RunState,
    status: RunStatus,
    reason: str | None,
    error: str | None,
    *,
    output: Any = None,
    pending: list[ApprovalRequest] | None = None,
) -> None:
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
