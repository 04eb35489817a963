"""Provider-neutral messages: frozen, typed, and exact through a JSON round trip.

A conversation is a list of :data:`Message`: an optional system message, then user and
assistant messages made of parts. Tool results travel in a user message (as the
Anthropic wire does); adapters for other wires split them out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

if TYPE_CHECKING:
    from pydantic import TypeAdapter

from dataclasses import dataclass, field

__all__ = [
    "AssistantMessage",
    "AssistantPart",
    "DocumentPart",
    "ImagePart",
    "Message",
    "Part",
    "SystemMessage",
    "TextPart",
    "ToolCallPart",
    "ToolDefinition",
    "ToolResultPart",
    "Usage",
    "UserMessage",
    "UserPart",
    "dump_messages",
    "load_messages",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class TextPart:
    """Plain text: a task, a thought, an answer, or a note from the loop."""

    type: Literal["text"] = "text"
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallPart:
    """A tool call: the arguments it ran with.

    ``raw_args`` keeps the model's argument text when it was not a valid JSON object, so
    the loop can tell the model exactly what it sent; ``args`` is then empty. When an
    approver or a capability changed the arguments, ``args`` is what ran and
    ``original_args`` what the model asked for.
    """

    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    raw_args: str | None = None
    original_args: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResultPart:
    """The observation for one tool call, rendered to text for the model.

    ``images`` holds what a tool returned as pictures (a screenshot, a page of a PDF);
    adapters send them in the wire's own form, or as a text stand-in without vision.
    """

    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    content: str
    is_error: bool = False
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePart:
    """An image, base64-encoded (PNG, JPEG, WebP or GIF)."""

    type: Literal["image"] = "image"
    media_type: str
    data: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentPart:
    """A document such as a PDF, base64-encoded, with its extracted text when known."""

    type: Literal["document"] = "document"
    media_type: str
    data: str
    text: str | None = None


UserPart: TypeAlias = TextPart | ToolResultPart | ImagePart | DocumentPart
AssistantPart: TypeAlias = TextPart | ToolCallPart
Part: TypeAlias = TextPart | ToolCallPart | ToolResultPart | ImagePart | DocumentPart


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token counts. ``input_tokens`` includes the cache read and cache write tokens."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemMessage:
    """Instructions for the model; at most one, first in the list."""

    role: Literal["system"] = "system"
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMessage:
    """What the user (or the loop, for tool results and notes) says to the model."""

    role: Literal["user"] = "user"
    parts: tuple[UserPart, ...]

    @classmethod
    def text(cls, text: str) -> UserMessage:
        return cls(parts=(TextPart(text=text),))


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantMessage:
    """One model response: text (the thought or the answer) and tool calls.

    ``finish_reason`` is normalised: ``stop``, ``tool_calls``, ``max_tokens`` or the
    provider's own word when it is none of those.
    """

    role: Literal["assistant"] = "assistant"
    parts: tuple[AssistantPart, ...]
    usage: Usage = field(default_factory=Usage)
    model_name: str | None = None
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]


Message: TypeAlias = SystemMessage | UserMessage | AssistantMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolDefinition:
    """What a model is told about a tool: its name, description and JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@cache
def _messages_adapter() -> TypeAdapter[list[Message]]:
    from pydantic import Field, TypeAdapter

    return TypeAdapter(list[Annotated[Message, Field(discriminator="role")]])


def dump_messages(messages: Iterable[Message], *, indent: int | None = None) -> str:
    """Serialise messages to JSON; :func:`load_messages` gives them back exactly."""
    return _messages_adapter().dump_json(list(messages), indent=indent).decode()


def load_messages(data: str | bytes | Sequence[Any]) -> list[Message]:
    """Parse messages from JSON text or from already-decoded JSON data."""
    if isinstance(data, (str, bytes)):
        return _messages_adapter().validate_json(data)
    return _messages_adapter().validate_python(list(data))


def args_json(args: dict[str, Any]) -> str:
    """Canonical JSON for tool arguments (sorted keys): used for display and comparison."""
    return json.dumps(args, sort_keys=True, ensure_ascii=False, default=str)
