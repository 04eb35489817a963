"""Models for tests: scripted turns or a function of the conversation. Use them in your own tests.

>>> from loopwise import Agent, tool
>>> from loopwise.models.testing import ScriptedModel, call
>>> @tool
... def add(a: int, b: int) -> int:
...     '''Add two integers.'''
...     return a + b
>>> model = ScriptedModel([call("add", a=2, b=3), "The sum is 5."])
>>> Agent(model, tools=[add]).run_sync("What is 2 + 3?").output
'The sum is 5.'
>>> model.requests[1].messages[-1].parts[0].content
'5'
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from ..context import estimate_tokens, tools_tokens
from ..errors import ModelError
from ..messages import (
    AssistantMessage,
    AssistantPart,
    Message,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    Usage,
)
from . import ModelSettings

__all__ = [
    "FunctionModel",
    "ScriptedCall",
    "ScriptedModel",
    "ScriptedRequest",
    "Turn",
    "call",
    "raw_call",
]


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """A tool call in a script; ``raw_args`` sends argument text that is not valid JSON."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    raw_args: str | None = None


def call(name: str, /, **args: Any) -> ScriptedCall:
    """A scripted tool call: ``call("add", a=1, b=2)``."""
    return ScriptedCall(name, args)


def raw_call(name: str, raw_args: str, *, id: str | None = None) -> ScriptedCall:
    """A scripted tool call whose arguments are the given (possibly broken) JSON text."""
    return ScriptedCall(name, {}, id=id, raw_args=raw_args)


Turn: TypeAlias = str | ScriptedCall | Sequence[str | ScriptedCall] | AssistantMessage
"""One model turn: text (an answer), one call, a list mixing text (the thought) and calls
(run concurrently), or a full :class:`AssistantMessage` (to set usage or finish reason)."""


@dataclass(frozen=True, slots=True)
class ScriptedRequest:
    """One request as the model saw it."""

    messages: list[Message]
    tools: list[ToolDefinition]
    settings: ModelSettings


class _TestModelBase(ABC):
    """Shared behaviour: naming, request recording, usage estimation, streaming."""

    def __init__(self, model_name: str, context_window: int | None, latency: float):
        self._model_name = model_name
        self._context_window = context_window
        self.latency = latency
        self.requests: list[ScriptedRequest] = []
        self._calls = 0
        self._token_cache: dict[int, tuple[object, int]] = {}

    @property
    def provider(self) -> str:
        return "test"

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def context_window(self) -> int | None:
        return self._context_window

    @abstractmethod
    async def _next_turn(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> Turn:
        """The next turn to play (each test model says where it comes from)."""

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        self.requests.append(ScriptedRequest(list(messages), list(tools), settings))
        if self.latency:
            await asyncio.sleep(self.latency)
        turn = await self._next_turn(messages, tools)
        message = self._to_message(turn, messages, tools)
        self._calls += 1
        return message

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AsyncIterator[str | AssistantMessage]:
        """Stream the turn's text word by word, then the whole message."""
        message = await self.request(messages, tools, settings)
        words = message.text.split(" ") if message.text else []
        for i, word in enumerate(words):
            yield word if i == len(words) - 1 else word + " "
        yield message

    def _to_message(
        self, turn: Turn, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AssistantMessage:
        if isinstance(turn, AssistantMessage):
            return turn if turn.model_name else replace(turn, model_name=self._model_name)
        items: Sequence[str | ScriptedCall]
        items = [turn] if isinstance(turn, (str, ScriptedCall)) else turn
        parts: list[AssistantPart] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                parts.append(TextPart(text=item))
            else:
                parts.append(
                    ToolCallPart(
                        id=item.id or f"call_{self._calls}_{i}",
                        name=item.name,
                        args={} if item.raw_args is not None else dict(item.args),
                        raw_args=item.raw_args,
                    )
                )
        has_calls = any(isinstance(p, ToolCallPart) for p in parts)
        message = AssistantMessage(
            parts=tuple(parts),
            model_name=self._model_name,
            finish_reason="tool_calls" if has_calls else "stop",
        )
        usage = Usage(
            requests=1,
            input_tokens=self._input_tokens(messages, tools),
            output_tokens=estimate_tokens(message),
        )
        return replace(message, usage=usage)

    def _input_tokens(self, messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> int:
        """Estimated input tokens, each message counted once (as a server's cache would)."""
        total = 0
        cache = self._token_cache
        for item in (*messages, *tools):
            hit = cache.get(id(item))
            if hit is None or hit[0] is not item:
                count = (
                    tools_tokens([item])
                    if isinstance(item, ToolDefinition)
                    else estimate_tokens(item)
                )
                hit = cache[id(item)] = (item, count)
            total += hit[1]
        return total


class ScriptedModel(_TestModelBase):
    """Plays back a list of turns, one per request, and records every request.

    When the turns run out the request fails with a :class:`ModelError`, which ends the run
    as ``failed`` saying so. ``latency`` (seconds) makes each request wait, as a real model
    would. Usage is estimated from message sizes unless a turn is an ``AssistantMessage``
    that carries its own.
    """

    def __init__(
        self,
        turns: Sequence[Turn],
        *,
        model_name: str = "scripted",
        context_window: int | None = None,
        latency: float = 0.0,
    ):
        super().__init__(model_name, context_window, latency)
        self.turns = list(turns)

    async def _next_turn(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> Turn:
        if self._calls >= len(self.turns):
            raise ModelError(
                f"ScriptedModel ran out of turns: it has {len(self.turns)} and the run asked "
                f"for turn {self._calls + 1}; add turns or check why the run did not stop."
            )
        return self.turns[self._calls]


TurnFunction: TypeAlias = Callable[[list[Message], list[ToolDefinition]], "Turn | Awaitable[Turn]"]


class FunctionModel(_TestModelBase):
    """Calls ``function(messages, tools)`` for each turn (sync or async); it returns a Turn."""

    def __init__(
        self,
        function: TurnFunction,
        *,
        model_name: str = "function",
        context_window: int | None = None,
        latency: float = 0.0,
    ):
        super().__init__(model_name, context_window, latency)
        self.function = function

    async def _next_turn(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> Turn:
        turn = self.function(list(messages), list(tools))
        if inspect.isawaitable(turn):
            turn = await turn
        if not isinstance(turn, (str, ScriptedCall, list, tuple, AssistantMessage)):
            raise ModelError(
                f"FunctionModel's function returned {type(turn).__name__}; return text, "
                "call(...), a list of them, or an AssistantMessage."
            )
        return turn
