"""A running run: its state, what stays fixed while it runs, the guard, and its capabilities.

:class:`RunContext` is what the loop (:mod:`loopwise.loop`), its tool half
(:mod:`loopwise.loop_tools`) and every capability hook see. :meth:`RunContext.guard`
awaits anything — model, tools, approvals, summaries, memory, hooks — under the run's
cancel event and time budget. A step ends in one :data:`Outcome`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from ._sync import SyncRunner
from .approval import ApprovalCallback, ApprovalRequest, Decision, as_decision
from .capabilities import (
    HOOKS,
    Allow,
    Ask,
    Capability,
    CapabilityError,
    Deny,
    ModelRequest,
    Rewrite,
    ToolCall,
    Verdict,
    overriding,
)
from .context import (
    ContextOverflow,
    ContextPolicy,
    History,
    estimate_tokens,
    fit,
    tools_tokens,
    transcript,
)
from .errors import LoopwiseError, ModelError, UsageError
from .events import ContextCompacted, Event, RunStarted
from .limits import BudgetTracker, Stop
from .messages import (
    AssistantMessage,
    AssistantPart,
    Message,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    UserMessage,
)
from .models import Model, ModelSettings, ModelWrapper, StreamingModel
from .output import OutputSpec
from .repetition import LoopDetector, LoopPolicy
from .scope import RunScope
from .state import RunState, unfit_json
from .tokens import Counter, counter_for
from .tools import Tool

__all__ = [
    "ApprovalCallbackCapability",
    "BudgetedModel",
    "Cancelled",
    "Continue",
    "Failed",
    "Final",
    "Outcome",
    "Paused",
    "RunContext",
    "Stopped",
    "TimedOut",
    "Wake",
]


logger = logging.getLogger("loopwise")


# -- how a step ends -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Continue:
    """Go on with the next step."""


@dataclass(frozen=True, slots=True)
class Final:
    """The model answered: the run is ``completed`` with ``output``."""

    output: Any


@dataclass(frozen=True, slots=True)
class Paused:
    """Calls wait for a human decision: the run is ``input_required``."""


@dataclass(frozen=True, slots=True)
class Stopped:
    """A limit stopped the run (``incomplete``), or it was ``cancelled``."""

    reason: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The run failed: ``reason`` is its stop_reason, ``error`` one clear sentence."""

    reason: str
    error: str


Outcome: TypeAlias = Continue | Final | Paused | Stopped | Failed


@dataclass(frozen=True, slots=True)
class Wake:
    """Not an outcome: events were queued (by child runs) while tools ran; pass them on."""


WAKE = Wake()


class Cancelled(Exception):
    """The run's cancel event was set while :meth:`RunContext.guard` waited."""


class TimedOut(Exception):
    """The run's time budget ran out (or had run out) when :meth:`RunContext.guard` waited."""


# -- the running run -------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class RunContext:
    """One run while it runs: its :class:`~loopwise.state.RunState` plus what stays fixed."""

    state: RunState
    tracker: BudgetTracker
    model: Model
    tools: dict[str, Tool]
    output: OutputSpec[Any]
    settings: ModelSettings
    context_window: int | None
    context_policy: ContextPolicy
    loop_policy: LoopPolicy
    deps: Any
    output_retries: int
    capabilities: tuple[Capability, ...] = ()
    cancel: asyncio.Event | None = None
    stream_text: bool = False
    parent: RunScope | None = None
    input_text: str = ""
    answer: Any = None
    """The final answer, typed (``state.output`` holds it as JSON data)."""
    counter: Counter | None = None
    """The model's own token counter, when it has one offline (else the estimator)."""
    runner: SyncRunner = field(default_factory=SyncRunner)
    """The threads this run's sync tools run on (a hung tool starves no other run)."""
    tool_defs: list[ToolDefinition] = field(default_factory=list)
    tool_tokens: int = 0
    detector: LoopDetector = field(init=False)
    _hooks: dict[str, tuple[Capability, ...]] = field(default_factory=dict)
    _outbox: deque[Event] = field(default_factory=deque)
    _wake: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self.counter = counter_for(self.model)  # before capabilities wrap the model
        self.state.history.use_counter(self.counter)  # recounts once per run start
        self.detector = LoopDetector(self.loop_policy, self.state.loop)
        self._hooks = {h: overriding(self.capabilities, h) for h in HOOKS}
        self._define_tools()

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def metadata(self) -> dict[str, Any]:
        return self.state.metadata

    def _define_tools(self) -> None:
        self.tool_defs = [t.definition() for t in self.tools.values()]
        if self.output.tool is not None:
            self.tool_defs.append(self.output.tool)
        self.tool_tokens = tools_tokens(self.tool_defs, self.counter)

    def taint(self, source: str) -> None:
        """Record that untrusted content from ``source`` entered the run's context."""
        if source not in self.state.untrusted:
            self.state.untrusted.append(source)

    # -- events from hooks and child runs -----------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue an event; the loop passes it on at its next chance (live during tools)."""
        self._outbox.append(event)
        if self._wake is not None:
            self._wake.set()

    def drain(self) -> Iterator[Event]:
        """The queued events, oldest first, each taken off the queue as it is handed out
        (so events queued while one is being passed on keep their order)."""
        while self._outbox:
            yield self._outbox.popleft()

    def scope(self) -> RunScope:
        """This run as the parent of runs its tools start."""
        return RunScope(
            self.run_id,
            self.tracker,
            self.state.depth,
            self.cancel,
            None,
            self.emit,
            capabilities=self.capabilities,
        )

    # -- the guard ------------------------------------------------------------------------

    async def guard(self, awaitable: Awaitable[Any]) -> Any:
        """Await under the cancel event and time budget; no work starts when none is left."""
        remaining = self.tracker.remaining_seconds()
        cancel = self.cancel
        if cancel is None and remaining is None:
            return await awaitable
        if (cancel is not None and cancel.is_set()) or (remaining is not None and remaining <= 0):
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise Cancelled if cancel is not None and cancel.is_set() else TimedOut
        work = asyncio.ensure_future(awaitable)
        waiters: set[asyncio.Future[Any]] = {work}
        stopper = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        if stopper is not None:
            waiters.add(stopper)
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
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

    # -- capability hooks -----------------------------------------------------------------

    async def _call(self, cap: Capability, hook: str, *args: Any) -> Any:
        try:
            return await self.guard(getattr(cap, hook)(self, *args))
        except (Cancelled, TimedOut, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise CapabilityError(
                f"capability {cap.label()!r} failed in {hook}: {type(exc).__name__}: {exc}"
            ) from exc

    async def start_capabilities(self) -> None:
        """Start each capability, add the tools they provide, apply their wrappers."""
        for cap in self._hooks["start"]:
            await self._call(cap, "start")
        tools = dict(self.tools)
        for cap in self._hooks["tools"]:
            for t in await self._call(cap, "tools"):
                if t.name in tools:
                    raise CapabilityError(
                        f"capability {cap.label()!r} provides a tool named {t.name!r}, "
                        "which the agent already has; give the toolset a prefix."
                    )
                tools[t.name] = t
        for cap in self._hooks["wrap_model"]:
            self.model = cap.wrap_model(self, self.model)
        for cap in self._hooks["wrap_tool"]:
            tools = {name: cap.wrap_tool(self, t) for name, t in tools.items()}
        if tools != self.tools:
            self.tools = tools
            self._define_tools()

    async def end_capabilities(self) -> None:
        """Each capability's ``end``, last first; every one runs even if one fails."""
        failure: CapabilityError | None = None
        for cap in reversed(self._hooks["end"]):
            try:
                await self._call(cap, "end")
            except (Cancelled, TimedOut):
                continue
            except CapabilityError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    async def before_model(self, request: ModelRequest) -> ModelRequest:
        for cap in self._hooks["before_model"]:
            request = await self._call(cap, "before_model", request) or request
        return request

    async def after_model(self, response: AssistantMessage) -> AssistantMessage:
        for cap in reversed(self._hooks["after_model"]):
            response = await self._call(cap, "after_model", response) or response
        return response

    async def verdict(self, call: ToolCall, asked: bool) -> Verdict:
        """The capabilities' verdict on a call (``asked``: the tool's own rule asks).

        The first ``Deny`` wins; any ``Ask`` asks; a ``Rewrite`` changes ``call.args``."""
        ask: Ask | None = Ask("requires_approval") if asked else None
        rewritten = False
        for cap in self._hooks["before_tool"]:
            v = await self._call(cap, "before_tool", call)
            if v is not None and not isinstance(v, Allow | Deny | Ask | Rewrite):
                raise CapabilityError(
                    f"capability {cap.label()!r} returned {v!r} from before_tool; return "
                    "Allow(), Deny(reason), Ask(reason), Rewrite(arguments) or None."
                )
            if isinstance(v, Deny):
                return v
            if isinstance(v, Ask):
                call.reasons.append(v.reason)
                ask = v if ask is None or not call.reasons[:-1] else ask
            elif isinstance(v, Rewrite):
                call.args = dict(v.arguments)
                rewritten = True
                if v.reason:
                    call.reasons.append(v.reason)
        if ask is not None:
            return ask
        return Rewrite(call.args) if rewritten else Allow()

    async def decide(self, request: ApprovalRequest) -> Decision | None:
        for cap in self._hooks["decide"]:
            decision = await self._call(cap, "decide", request)
            if decision is not None:
                return as_decision(decision)
        return None

    async def after_tool(self, call: ToolCall, result: ToolResultPart) -> ToolResultPart:
        for cap in reversed(self._hooks["after_tool"]):
            result = await self._call(cap, "after_tool", call, result) or result
        return result

    async def on_event(self, event: Event) -> None:
        for cap in self._hooks["on_event"]:
            await self._call(cap, "on_event", event)

    @property
    def observed(self) -> bool:
        return bool(self._hooks["on_event"])

    # -- events and outcomes ---------------------------------------------------------------

    def started(self) -> RunStarted:
        state = self.state
        return RunStarted(
            run_id=self.run_id,
            step=state.steps,
            agent=state.agent,
            model=state.model or f"{self.model.provider}:{self.model.model_name}",
            input=self.input_text,
            parent_run_id=state.parent_run_id,
            depth=state.depth,
        )

    def outcome_of(self, exc: Exception) -> Outcome:
        """The outcome an exception out of a step means."""
        if isinstance(exc, Cancelled):
            return Stopped("cancelled")
        if isinstance(exc, TimedOut):
            limit = self.tracker.budget.max_seconds
            return Stopped("timeout", f"the run used its max_seconds={limit}")
        if isinstance(exc, ContextOverflow):
            return Failed("context_window", str(exc))
        if isinstance(exc, ModelError | CapabilityError | LoopwiseError):
            return Failed("error", str(exc))
        logger.exception("run %s failed with an unexpected error", self.run_id)
        return Failed("error", f"{type(exc).__name__}: {exc}")

    # -- the model ---------------------------------------------------------------------------

    async def fit_context(self, reserved: int) -> list[ContextCompacted]:
        """Compact the history to fit the window (``reserved`` tokens kept for the answer)."""
        assert self.context_window is not None
        done = await fit(
            self.state.history,
            window=self.context_window - self.tool_tokens,
            reserved=reserved,
            policy=self.context_policy,
            summarise=self.summarise,
        )
        return [
            ContextCompacted(
                run_id=self.run_id,
                step=self.tracker.steps,
                strategy=c.strategy,  # type: ignore[arg-type]
                tokens_before=c.tokens_before,
                tokens_after=c.tokens_after,
            )
            for c in done
        ]

    async def call_model(self, request: ModelRequest) -> AsyncIterator[str | AssistantMessage]:
        """The model's answer to ``request`` (text deltas first when streaming), guarded."""
        model = self.model
        if not (self.stream_text and isinstance(model, StreamingModel)):
            yield await self.guard(model.request(request.messages, request.tools, request.settings))
            return
        stream = model.stream(request.messages, request.tools, request.settings)
        try:
            while True:
                try:
                    item = await self.guard(anext(stream))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def summarise(self, messages: list[Message]) -> str | None:
        """A summary of older turns by the run's model, within the budget and the window."""
        assert self.context_window is not None
        max_chars = max((self.context_window // 2) * 3, 1000)
        prompt = (
            "Summarise the work below for your own later use: the facts learned, tool "
            "results that matter, what was tried and failed, and what remains. Be concise."
            "\n\n" + transcript(messages, max_chars)
        )
        request = [UserMessage.text(prompt)]
        room = self.context_window - History.of(request, counter=self.counter).total
        settings = ModelSettings(
            max_tokens=max(min(self.context_policy.summary_tokens, room), 1), tool_choice="none"
        )
        try:
            response = await self.budgeted_model().request(request, [], settings)
        except ModelError:
            return None
        return response.text.strip() or None

    def budgeted_model(self) -> BudgetedModel:
        """The run's model for calls that are not steps (summaries): each is checked
        against the budgets first and counted in the run's totals."""
        return BudgetedModel(self.model, self.tracker, self.guard)


def checked(response: AssistantMessage) -> AssistantMessage:
    """Distinct call ids (some servers reuse them); arguments a run cannot hold (NaN or
    Infinity, nesting past 64 levels) replaced by a note, so the call becomes an
    invalid-arguments observation."""
    calls = response.tool_calls
    unfit = {c.id: why for c in calls if (why := unfit_json(c.args)) is not None}
    if len({c.id for c in calls}) == len(calls) and not unfit:
        return response
    seen: set[str] = set()
    parts: list[AssistantPart] = []
    for i, p in enumerate(response.parts):
        if isinstance(p, ToolCallPart):
            why = unfit.get(p.id)
            if p.id in seen or not p.id:
                p = replace(p, id=f"{p.id or 'call'}_{i}")
            if why is not None:
                p = replace(p, args={}, raw_args=f"(the arguments were not kept: {why})")
            seen.add(p.id)
        parts.append(p)
    return replace(response, parts=tuple(parts))


class BudgetedModel(ModelWrapper):
    """A model whose every request is checked against a run's budgets, guarded, and counted
    (see :meth:`RunContext.budgeted_model`); ``called`` says whether one was made."""

    def __init__(
        self,
        real: Model,
        tracker: BudgetTracker,
        guard: Callable[[Awaitable[Any]], Awaitable[Any]],
    ):
        super().__init__(real)
        self.tracker = tracker
        self.guard = guard
        self.called = False

    async def request(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition], settings: ModelSettings
    ) -> AssistantMessage:
        count = counter_for(self.real)
        estimate = sum(estimate_tokens(m, count) for m in messages) + tools_tokens(tools, count)
        verdict = self.tracker.check_model_call(estimate, settings.max_tokens, step=False)
        if isinstance(verdict, Stop):
            raise ModelError(f"no budget left for this call ({verdict.detail})")
        try:
            reply: AssistantMessage = await self.guard(
                self.real.request(messages, tools, replace(settings, max_tokens=verdict.max_tokens))
            )
        except BaseException:
            self.tracker.release()
            raise
        self.called = True
        self.tracker.record(reply.usage)
        return reply


class ApprovalCallbackCapability(Capability):
    """An ``approve=`` callback as a capability: it answers every ``Ask`` (and a child
    run that has no approver of its own uses its parent's)."""

    name = "approve"

    def __init__(self, callback: ApprovalCallback):
        if not callable(callback):
            raise UsageError(f"approve= must be a callable, not {type(callback).__name__}.")
        self.callback = callback

    async def decide(self, run: RunContext, request: ApprovalRequest) -> Decision | None:
        answer = self.callback(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return as_decision(answer)

    def for_child(self, run_id: str) -> Capability | None:
        return self
