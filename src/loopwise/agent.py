"""The :class:`Agent`: a model, tools, limits and an output type, run as a ReAct loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Generic, Protocol

from typing_extensions import TypeVar

from .approval import ApprovalCallback, Approve, Decision, Reject
from .capabilities import Capability
from .context import ContextPolicy
from .errors import UsageError
from .events import Event
from .limits import Budget, BudgetTracker
from .loop import run_loop
from .messages import Message, SystemMessage, TextPart, UserMessage, UserPart
from .models import Model, ModelSettings, default_model, infer_model
from .models.pricing import ModelPrice, pricer_for
from .output import OutputSpec
from .repetition import LoopPolicy
from .result import RunResult
from .run import ApprovalCallbackCapability, RunContext
from .scope import RunScope
from .state import RunState
from .tools import Tool, tool

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


class MemoryLike(Protocol):
    """What ``memory=`` takes (a :class:`loopwise.memory.Memory`): it gives a capability."""

    def capability(self) -> Capability: ...


class Agent(Generic[DepsT, OutputT]):
    """An LLM agent: it reasons, calls tools, observes, and repeats until it can answer.

    ``model`` is a ``provider:model`` string or a :class:`~loopwise.models.Model`; when
    ``None`` it is chosen at run time (``LOOPWISE_MODEL``, then a provider whose API key is
    set). ``budget`` limits USD, tokens, seconds and tool calls; ``max_steps`` limits model
    calls. ``output_type`` other than ``str`` asks the model for a validated structured
    answer. ``approve`` decides calls that need approval (a tool's ``requires_approval``
    or a capability's ``Ask``); without it such a call pauses the run as
    ``input_required``. ``capabilities`` extend every run (:mod:`loopwise.capabilities`);
    a capability given in ``tools`` (a toolset) is added to them. ``memory`` (a
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
        memory: MemoryLike | None = None,
        capabilities: Sequence[Capability] = (),
    ):
        if max_steps < 1:
            raise UsageError(f"max_steps must be at least 1, not {max_steps}.")
        if isinstance(model, str):
            _check_model_string(model)
        self.model = model
        self.tools: dict[str, Tool] = {}
        self.capabilities: list[Capability] = list(capabilities)
        for t in tools:
            if isinstance(t, Capability):
                self.capabilities.append(t)
                continue
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
        if memory is not None:
            self.capabilities.append(memory.capability())

    # -- running ---------------------------------------------------------------------

    async def run(
        self,
        input: Input | RunState | None = None,
        *,
        state: RunState | None = None,
        deps: DepsT = None,  # type: ignore[assignment]
        messages: Sequence[Message] | None = None,
        model: str | Model | None = None,
        budget: Budget | None = None,
        cancel: asyncio.Event | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        parent: RunScope | None = None,
    ) -> RunResult[OutputT]:
        """Run the agent to the end and return the result.

        ``input`` is the task (text, or text and images/documents). ``state`` (or a
        :class:`~loopwise.state.RunState` as ``input``) continues that run: its pending
        calls run with the decisions given (``state.approve`` / ``state.reject``), its
        budgets and counters carry on, and new ``input`` is added after them (a call left
        undecided is then not run). ``messages`` starts a new run on an earlier
        conversation. ``cancel`` (an ``asyncio.Event``) ends the run as ``cancelled`` when
        set; ``model`` and ``budget`` override the agent's for this run; ``parent`` makes
        it a child run that spends from the parent's budget (see :mod:`loopwise.agents`).
        """
        stream = self.stream(
            input,
            state=state,
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

    def run_sync(self, input: Input | RunState | None = None, **kwargs: Any) -> RunResult[OutputT]:
        """:meth:`run` for code that is not async (it starts and ends an event loop)."""
        try:
            asyncio.get_running_loop()
            running = True
        except RuntimeError:
            running = False
        if running:
            raise UsageError("run_sync() was called inside a running event loop; use await run().")
        return asyncio.run(self.run(input, **kwargs))

    def stream(
        self,
        input: Input | RunState | None = None,
        *,
        state: RunState | None = None,
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
        if isinstance(input, RunState):
            if state is not None:
                raise UsageError("Give the run state once: as input or as state=, not both.")
            input, state = None, input
        new_input = _user_message(input)
        if state is not None:
            if messages is not None:
                raise UsageError("Give state= or messages=, not both: the state holds them.")
            state = _continued(state, new_input)
            if metadata is not None:  # what capabilities keep in a run (loopwise.*) stays
                kept = {k: v for k, v in state.metadata.items() if k.startswith("loopwise.")}
                state.metadata = {**kept, **dict(metadata)}
        else:
            if new_input is None:
                raise UsageError("The input is empty; give the agent a task.")
            state = RunState.start(run_id or f"run_{uuid.uuid4().hex}", self._opening(messages))
            state.metadata = dict(metadata or {})
        return self._start(
            state,
            new_input,
            deps=deps,
            model=model,
            budget=budget,
            cancel=cancel,
            text_deltas=text_deltas,
            input_text=_input_text(input) if input is not None else "(resumed)",
            parent=parent,
        )

    def as_tool(
        self, name: str | None = None, description: str | None = None, **options: Any
    ) -> Tool:
        """This agent as a tool of another agent (:func:`loopwise.agents.agent_tool`)."""
        from .agent_tool import agent_tool

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
        """Continue a run that stopped as ``input_required`` with a decision for each call
        (``Approve()`` / ``Reject(reason)``, or ``True``/``False``); the same as deciding
        on ``result.state`` and calling :meth:`run` with it."""
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
        if result.status != "input_required" or result.state is None:
            raise UsageError(
                f"Only an input_required run can be resumed; this one is {result.status}."
            )
        state = result.state.copy()
        pending = {p.call_id for p in state.pending}
        unknown = set(decisions) - pending
        if unknown:
            raise UsageError(
                f"No pending call has the id(s) {sorted(unknown)}; pending: {sorted(pending)}."
            )
        for call_id, d in decisions.items():
            d = d if isinstance(d, Approve | Reject) else (Approve() if d else Reject())
            if isinstance(d, Approve):
                state.approve(call_id, d.arguments)
            else:
                state.reject(call_id, d.reason)
        return self.stream(
            state, deps=deps, cancel=cancel, text_deltas=text_deltas, metadata=metadata
        )

    # -- internals -------------------------------------------------------------------

    def _model(self, override: str | Model | None) -> Model:
        if override is not None:
            return infer_model(override)
        if self._resolved is None:
            self._resolved = infer_model(self.model if self.model is not None else default_model())
        return self._resolved

    def _opening(self, messages: Sequence[Message] | None) -> list[Message]:
        """The messages a new run starts from: an earlier conversation, with a system prompt."""
        opening = list(messages or ())
        if not any(isinstance(m, SystemMessage) for m in opening):
            opening.insert(0, SystemMessage(content=self.system or DEFAULT_SYSTEM_PROMPT))
        return opening

    def _capabilities(self, run_id: str, parent: RunScope | None) -> tuple[Capability, ...]:
        """This agent's capabilities, then what the parent run hands down to a child."""
        caps = list(self.capabilities)
        if self.approve is not None:
            caps.append(ApprovalCallbackCapability(self.approve))
        if parent is not None:
            for cap in parent.capabilities:
                inherited = cap.for_child(run_id)
                if inherited is not None and inherited not in caps:
                    caps.append(inherited)
            if parent.approve is not None:
                caps.append(ApprovalCallbackCapability(parent.approve))
        return tuple(caps)

    def _start(
        self,
        state: RunState,
        new_input: UserMessage | None,
        *,
        deps: Any,
        model: str | Model | None,
        budget: Budget | None,
        cancel: asyncio.Event | None,
        text_deltas: bool,
        input_text: str,
        parent: RunScope | None,
    ) -> AgentStream[OutputT]:
        resolved = self._model(model)
        budget = budget or self.budget
        priced = budget.max_usd is not None or _limits_usd(parent)
        pricer = pricer_for(resolved.provider, resolved.model_name, self.price, required=priced)
        tracker = BudgetTracker(
            budget=budget,
            max_steps=self.max_steps,
            pricer=pricer,
            spend=state.spend,
            parent=parent.tracker if parent is not None else None,
        )
        state.agent = self.name
        state.model = f"{resolved.provider}:{resolved.model_name}"
        if parent is not None:
            state.parent_run_id, state.depth = parent.run_id, parent.depth + 1
        run = RunContext(
            state=state,
            tracker=tracker,
            model=resolved,
            tools=dict(self.tools),
            output=self._output,
            settings=self.settings,
            context_window=self.context_window or resolved.context_window,
            context_policy=self.context_policy,
            loop_policy=self.loop_policy,
            deps=deps,
            output_retries=self.output_retries,
            capabilities=self._capabilities(state.run_id, parent),
            cancel=cancel,
            stream_text=text_deltas,
            parent=parent,
            input_text=input_text,
        )
        return AgentStream(run, new_input)


class AgentStream(Generic[OutputT]):
    """The events of a run, as an async iterator; ``result`` once iteration has ended."""

    def __init__(self, run: RunContext, new_input: UserMessage | None):
        self._run = run
        self._input = new_input
        self.run_id = run.run_id

    @property
    def state(self) -> RunState:
        """The run's state, as it is now (final once iteration has ended)."""
        return self._run.state

    async def __aiter__(self) -> AsyncIterator[Event]:
        async for event in run_loop(self._run, self._input):
            yield event

    @property
    def result(self) -> RunResult[OutputT]:
        state = self._run.state
        if state.status in ("queued", "in_progress"):
            raise UsageError("The run has not finished: iterate over the stream to the end.")
        return RunResult.of(state, self._run.answer)


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


def _user_message(input: Input | None) -> UserMessage | None:
    if input is None:
        return None
    parts: tuple[UserPart, ...]
    if isinstance(input, str):
        parts = (TextPart(text=input),) if input else ()
    else:
        parts = tuple(TextPart(text=p) if isinstance(p, str) else p for p in input)
    if not parts:
        raise UsageError("The input is empty; give the agent a task.")
    return UserMessage(parts=parts)


def _continued(state: RunState, new_input: UserMessage | None) -> RunState:
    """A copy of ``state`` to continue (the given state is left as it was)."""
    if new_input is None:
        if state.undecided:
            ids = ", ".join(p.call_id for p in state.undecided)
            raise UsageError(
                f"Pending calls have no decision: {ids}. Call state.approve(call_id) or "
                "state.reject(call_id, reason) for each, or give new input."
            )
        if state.status == "completed":
            raise UsageError("This run is completed; give new input to continue it.")
    return state.copy()


def _input_text(input: Input) -> str:
    if isinstance(input, str):
        return input
    return " ".join(p if isinstance(p, str) else f"[{p.type}]" for p in input)
