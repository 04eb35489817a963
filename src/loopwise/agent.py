"""The :class:`Agent`: a model, tools, limits and an output type, run as a ReAct loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic

from typing_extensions import TypeVar

from .approval import ApprovalCallback, Approve, Decision, Reject
from .context import ContextPolicy, History
from .errors import UsageError
from .events import Event, RunStarted
from .limits import Budget, BudgetTracker
from .loop import RunConfig, RunState, run_steps
from .messages import Message, SystemMessage, TextPart, UserMessage, UserPart
from .models import Model, ModelSettings, default_model, infer_model
from .models.pricing import ModelPrice, pricer_for
from .output import OutputSpec
from .repetition import LoopDetector, LoopPolicy
from .result import RunResult
from .scope import RunScope
from .tools import Tool, tool

if TYPE_CHECKING:
    from .memory import Memory

__all__ = ["DEFAULT_SYSTEM_PROMPT", "Agent", "AgentStream"]

DepsT = TypeVar("DepsT", default=None)
OutputT = TypeVar("OutputT", default=str)

DEFAULT_SYSTEM_PROMPT = """\
You are a capable assistant that completes tasks by reasoning and using tools.
Work step by step. Before each tool call, say in one or two sentences why you are making it.
Use the tools' results as your observations; do not invent results.
Do not repeat a call you have already made with the same arguments: use the result you have.
If a tool returns an error, read it, then fix the arguments or try another way; \
if you cannot recover, say so plainly.
When the task is done, stop calling tools and give a clear, complete final answer."""

Input = str | Sequence[str | UserPart]


class Agent(Generic[DepsT, OutputT]):
    """An LLM agent: it reasons, calls tools, observes, and repeats until it can answer.

    ``model`` is a ``provider:model`` string or a :class:`~loopwise.models.Model`; when
    ``None`` it is chosen at run time (``LOOPWISE_MODEL``, then a provider whose API key is
    set). ``budget`` limits USD, tokens, seconds and tool calls; ``max_steps`` limits model
    calls. ``output_type`` other than ``str`` asks the model for a validated structured
    answer. ``approve`` decides calls to tools made with ``requires_approval=True``;
    without it such a call pauses the run as ``input_required``. ``memory`` (a
    :class:`~loopwise.memory.Memory`) recalls relevant memories at the start of a run and
    stores one when it ends.
    """

    def __init__(
        self,
        model: str | Model | None = None,
        *,
        tools: Sequence[Tool | Any] = (),
        system: str | None = None,
        max_steps: int = 25,
        budget: Budget | None = None,
        output_type: type[OutputT] = str,  # type: ignore[assignment]
        name: str | None = None,
        context_window: int | None = None,
        approve: ApprovalCallback | None = None,
        settings: ModelSettings | None = None,
        price: ModelPrice | None = None,
        output_retries: int = 3,
        loop_policy: LoopPolicy | None = None,
        context_policy: ContextPolicy | None = None,
        deps_type: type[DepsT] | None = None,
        memory: Memory | None = None,
    ):
        if max_steps < 1:
            raise UsageError(f"max_steps must be at least 1, not {max_steps}.")
        if isinstance(model, str):
            _check_model_string(model)
        self.model = model
        self.tools: dict[str, Tool] = {}
        for t in tools:
            t = t if isinstance(t, Tool) else tool(t)
            if t.name in self.tools:
                raise UsageError(f"Two tools are named {t.name!r}; tool names must be unique.")
            self.tools[t.name] = t
        self.system = system
        self.max_steps = max_steps
        self.budget = budget or Budget()
        self.output_type = output_type
        self.name = name
        self.context_window = context_window
        self.approve = approve
        self.settings = settings or ModelSettings()
        self.price = price
        self.output_retries = output_retries
        self.loop_policy = loop_policy or LoopPolicy()
        self.context_policy = context_policy or ContextPolicy()
        self.deps_type = deps_type
        self._output = OutputSpec(output_type)
        self._resolved: Model | None = None
        self.memory = memory

    # -- running ---------------------------------------------------------------------

    async def run(
        self,
        input: Input,
        *,
        deps: DepsT = None,  # type: ignore[assignment]
        messages: Sequence[Message] | None = None,
        model: str | Model | None = None,
        budget: Budget | None = None,
        cancel: asyncio.Event | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        parent: RunScope | None = None,
    ) -> RunResult[OutputT]:
        """Run the agent on ``input`` to the end and return the result.

        ``messages`` continues an earlier conversation; ``cancel`` (an ``asyncio.Event``)
        ends the run as ``cancelled`` when set; ``model`` and ``budget`` override the
        agent's for this run. ``parent`` makes it a child run that spends from the
        parent's budget (see :mod:`loopwise.agents`).
        """
        stream = self.stream(
            input,
            deps=deps,
            messages=messages,
            model=model,
            budget=budget,
            cancel=cancel,
            run_id=run_id,
            metadata=metadata,
            text_deltas=False,
            parent=parent,
        )
        async for _ in stream:
            pass
        return stream.result

    def run_sync(self, input: Input, **kwargs: Any) -> RunResult[OutputT]:
        """:meth:`run` for code that is not async (it starts and ends an event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(input, **kwargs))
        raise UsageError("run_sync() was called inside a running event loop; use await run().")

    def stream(
        self,
        input: Input,
        *,
        deps: DepsT = None,  # type: ignore[assignment]
        messages: Sequence[Message] | None = None,
        model: str | Model | None = None,
        budget: Budget | None = None,
        cancel: asyncio.Event | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        text_deltas: bool = True,
        parent: RunScope | None = None,
    ) -> AgentStream[OutputT]:
        """Run the agent, yielding its events as they happen; ``.result`` at the end."""
        history = self._history(input, messages)
        return self._start(
            history,
            deps=deps,
            model=model,
            budget=budget,
            cancel=cancel,
            run_id=run_id,
            metadata=metadata,
            text_deltas=text_deltas,
            input_text=_input_text(input),
            parent=parent,
        )

    def as_tool(
        self, name: str | None = None, description: str | None = None, **options: Any
    ) -> Tool:
        """This agent as a tool of another agent (:func:`loopwise.agents.agent_tool`)."""
        from .agents.as_tool import agent_tool

        return agent_tool(self, name=name, description=description, **options)

    async def resume(
        self,
        result: RunResult[OutputT],
        decisions: Mapping[str, Decision | bool],
        *,
        deps: DepsT = None,  # type: ignore[assignment]
        cancel: asyncio.Event | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RunResult[OutputT]:
        """Continue a run that stopped as ``input_required`` with a decision for each call.

        ``decisions`` maps each pending call id to ``Approve()`` / ``Reject(reason)`` (or
        ``True``/``False``). Usage, cost and steps carry on from ``result``.
        """
        stream = self.resume_stream(
            result, decisions, deps=deps, cancel=cancel, text_deltas=False, metadata=metadata
        )
        async for _ in stream:
            pass
        return stream.result

    def resume_stream(
        self,
        result: RunResult[OutputT],
        decisions: Mapping[str, Decision | bool],
        *,
        deps: DepsT = None,  # type: ignore[assignment]
        cancel: asyncio.Event | None = None,
        text_deltas: bool = True,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentStream[OutputT]:
        """:meth:`resume`, yielding events (``metadata`` is what tools see, as in ``run``)."""
        if result.status != "input_required":
            raise UsageError(
                f"Only an input_required run can be resumed; this one is {result.status}."
            )
        pending = {p.call_id for p in result.pending_approvals}
        unknown = set(decisions) - pending
        if unknown:
            raise UsageError(
                f"No pending call has the id(s) {sorted(unknown)}; pending: {sorted(pending)}."
            )
        missing = pending - set(decisions)
        if missing:
            raise UsageError(
                f"A decision is needed for every pending call; missing: {sorted(missing)}."
            )
        chosen: dict[str, Decision] = {
            k: v if isinstance(v, Approve | Reject) else (Approve() if v else Reject())
            for k, v in decisions.items()
        }
        return self._start(
            History.of(result.messages),
            deps=deps,
            model=None,
            budget=None,
            cancel=cancel,
            run_id=result.run_id,
            metadata=metadata,
            text_deltas=text_deltas,
            input_text="(resumed)",
            decisions=chosen,
            prior=result,
        )

    # -- internals -------------------------------------------------------------------

    def _model(self, override: str | Model | None) -> Model:
        if override is not None:
            return infer_model(override)
        if self._resolved is None:
            self._resolved = infer_model(self.model if self.model is not None else default_model())
        return self._resolved

    def _history(self, input: Input, messages: Sequence[Message] | None) -> History:
        history = History.of(messages or ())
        if not any(isinstance(m, SystemMessage) for m in history.messages):
            history.messages.insert(0, SystemMessage(content=self.system or DEFAULT_SYSTEM_PROMPT))
            history = History.of(history.messages)
        parts: tuple[UserPart, ...]
        if isinstance(input, str):
            parts = (TextPart(text=input),)
        else:
            parts = tuple(TextPart(text=p) if isinstance(p, str) else p for p in input)
        if not parts:
            raise UsageError("The input is empty; give the agent a task.")
        history.append(UserMessage(parts=parts))
        return history

    def _start(
        self,
        history: History,
        *,
        deps: Any,
        model: str | Model | None,
        budget: Budget | None,
        cancel: asyncio.Event | None,
        run_id: str | None,
        metadata: Mapping[str, Any] | None,
        text_deltas: bool,
        input_text: str,
        decisions: dict[str, Decision] | None = None,
        prior: RunResult[Any] | None = None,
        parent: RunScope | None = None,
    ) -> AgentStream[OutputT]:
        resolved = self._model(model)
        budget = budget or self.budget
        priced = budget.max_usd is not None or _limits_usd(parent)
        pricer = pricer_for(resolved.provider, resolved.model_name, self.price, required=priced)
        tracker = BudgetTracker(
            budget=budget,
            max_steps=self.max_steps,
            pricer=pricer,
            parent=parent.tracker if parent is not None else None,
        )
        if prior is not None:
            tracker = replace(
                tracker,
                usage=prior.usage,
                cost_usd=prior.cost_usd,
                steps=prior.steps,
                tool_calls=prior.tool_calls,
            )
        cfg = RunConfig(
            run_id=run_id or f"run_{uuid.uuid4().hex}",
            agent_name=self.name,
            model=resolved,
            tools=self.tools,
            output=self._output,
            settings=self.settings,
            context_window=self.context_window or resolved.context_window,
            context_policy=self.context_policy,
            approve=self.approve or (parent.approve if parent is not None else None),
            deps=deps,
            output_retries=self.output_retries,
            cancel=cancel,
            stream_text=text_deltas,
            metadata=metadata or {},
            parent=parent,
        )
        state = RunState(
            history=history,
            tracker=tracker,
            detector=LoopDetector(self.loop_policy),
            decisions=decisions or {},
        )
        return AgentStream(cfg, state, input_text, memory=self.memory)


class AgentStream(Generic[OutputT]):
    """The events of a run, as an async iterator; ``result`` once iteration has ended."""

    def __init__(
        self, cfg: RunConfig, state: RunState, input_text: str, memory: Memory | None = None
    ):
        self._cfg = cfg
        self._memory = memory
        self._state = state
        self._input = input_text
        self.run_id = cfg.run_id

    async def __aiter__(self) -> AsyncIterator[Event]:
        cfg = self._cfg
        yield RunStarted(
            run_id=cfg.run_id,
            step=self._state.tracker.steps,
            agent=cfg.agent_name,
            model=f"{cfg.model.provider}:{cfg.model.model_name}",
            input=self._input,
            parent_run_id=cfg.parent_run_id,
            depth=cfg.depth,
        )
        try:
            async for event in _steps(cfg, self._state, self._memory):
                yield event
        finally:
            self._state.tracker.release()  # a child's call cut short holds nothing

    @property
    def result(self) -> RunResult[OutputT]:
        if self._state.result is None:
            raise UsageError("The run has not finished: iterate over the stream to the end.")
        return self._state.result


def _check_model_string(model: str) -> None:
    if model == "local":  # the embedded model with its default weights
        return
    provider, sep, name = model.partition(":")
    if not sep or not name or not provider:
        raise UsageError(
            f"Model {model!r} is not of the form 'provider:model', for example "
            "'anthropic:claude-sonnet-4-6'."
        )


def _limits_usd(parent: RunScope | None) -> bool:
    """Whether a run above this one has a USD limit (so this run's calls must be priced)."""
    tracker = parent.tracker if parent is not None else None
    while tracker is not None:
        if tracker.budget.max_usd is not None:
            return True
        tracker = tracker.parent
    return False


def _steps(cfg: RunConfig, state: RunState, memory: Memory | None) -> AsyncIterator[Event]:
    """The loop, wrapped in recall and record when the agent has long-term memory."""
    if memory is None:
        return run_steps(cfg, state)
    from .memory.hook import run_with_memory

    return run_with_memory(memory, cfg, state)


def _input_text(input: Input) -> str:
    if isinstance(input, str):
        return input
    return " ".join(p if isinstance(p, str) else f"[{p.type}]" for p in input)
