"""Anthropic Messages API through the official ``anthropic`` SDK (request and streaming).

The system prompt and the tool definitions carry ``cache_control`` marks, so the prefix
that repeats on every step of a run is read from Anthropic's prompt cache. The SDK's own
retries are off: :func:`with_retries` retries transient failures and honours Retry-After.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError, UsageError
from ..messages import (
    AssistantMessage,
    AssistantPart,
    DocumentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    Usage,
    UserMessage,
)
from . import ModelSettings
from ._vision import ANTHROPIC_LIMITS, document_text, prepare_image
from .retry import RetryPolicy, retry_after_from, with_retries

try:
    import anthropic
    import httpx2
    from anthropic.types import Message as WireMessage
    from anthropic.types import RawMessageStreamEvent
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise UsageError(
        "The Anthropic SDK is not installed; run: pip install 'loopwise[anthropic]'."
    ) from exc

__all__ = ["AnthropicModel"]

_DEFAULT_RETRY = RetryPolicy()
_EPHEMERAL = {"type": "ephemeral"}
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
# Error types of an ``error`` event inside a stream that answered HTTP 200.
_RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})
_TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "max_tokens",
}

Block = dict[str, Any]


class AnthropicModel:
    """A Claude model on the Messages API; implements ``StreamingModel``.

    Credentials and the endpoint come from ``api_key``/``base_url`` or, through the SDK's
    defaults, from ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL``.
    """

    def __init__(
        self,
        model_name: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        retry: RetryPolicy = _DEFAULT_RETRY,
        client: anthropic.AsyncAnthropic | None = None,
        context_window: int | None = None,
        vision: bool = True,
    ) -> None:
        self._model_name = model_name
        self._retry = retry
        self._context_window = context_window
        self.vision = vision  # images and PDFs as blocks; False: text stand-ins instead
        if client is None:
            if api_key is None and not (
                os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")
            ):
                raise UsageError(
                    "No Anthropic API key: set ANTHROPIC_API_KEY or pass api_key to AnthropicModel."
                )
            client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0)
        self._client = client

    @property
    def provider(self) -> str:
        return "anthropic"

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def context_window(self) -> int | None:
        if self._context_window is not None:
            return self._context_window
        return 200_000 if self._model_name.startswith("claude") else None

    @property
    def _label(self) -> str:
        return f"anthropic:{self._model_name}"

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        """Send the conversation and return Claude's response with its usage."""
        params = self._params(messages, tools, settings)

        async def call() -> WireMessage:
            response: WireMessage = await self._client.messages.create(**params)
            return response

        try:
            response = await with_retries(call, _classify, self._retry)
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise _model_error(exc, self._label, str(self._client.base_url)) from exc
        return _parse_message(response, self._model_name)

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AsyncIterator[str | AssistantMessage]:
        """Yield text deltas as they arrive, then the complete :class:`AssistantMessage`.

        A failure before the first delta is retried like a request; after it, it is not,
        since the caller has already seen part of the answer.
        """
        params = self._params(messages, tools, settings)
        assembler = _StreamAssembler(self._model_name)

        async def start() -> tuple[anthropic.AsyncStream[RawMessageStreamEvent], str | None]:
            assembler.reset()
            events = await self._client.messages.create(**params, stream=True)
            try:
                while True:
                    delta = assembler.feed(await events.__anext__())
                    if delta:
                        return events, delta
            except StopAsyncIteration:
                return events, None
            except BaseException:
                await events.close()
                raise

        try:
            events, first = await with_retries(start, _classify, self._retry)
            try:
                if first:
                    yield first
                async for event in events:
                    delta = assembler.feed(event)
                    if delta:
                        yield delta
            finally:
                await events.close()
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise _model_error(exc, self._label, str(self._client.base_url)) from exc
        yield assembler.message()

    def _params(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> dict[str, Any]:
        system, turns = _wire_messages(messages, vision=self.vision)
        params: dict[str, Any] = {
            "model": self._model_name,
            "max_tokens": settings.max_tokens,
            "messages": turns,
            # An explicit timeout also stops the SDK refusing a large max_tokens without
            # streaming; the SDK's default is 10 minutes.
            "timeout": settings.timeout if settings.timeout is not None else self._client.timeout,
        }
        if system:
            params["system"] = system
        if tools:
            params["tools"] = _wire_tools(tools)
            params["tool_choice"] = _tool_choice(settings.tool_choice)
        if settings.temperature is not None:
            # SDK 1.0 dropped the sampling keywords; the API takes them on models that
            # support them (newer ones reject them: then the user sees that 400).
            params["extra_body"] = {"temperature": settings.temperature}
        if settings.stop_sequences:
            params["stop_sequences"] = list(settings.stop_sequences)
        return params


# -- request mapping ------------------------------------------------------------------------


def _wire_messages(
    messages: Sequence[Message], *, vision: bool = True
) -> tuple[list[Block], list[dict[str, Any]]]:
    """System text blocks and alternating user/assistant turns (same roles merged)."""
    system: list[Block] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            if message.content:
                system.append({"type": "text", "text": message.content})
            continue
        if isinstance(message, UserMessage):
            blocks = [b for b in (_user_block(p, vision) for p in message.parts) if b is not None]
        else:
            blocks = [b for b in map(_assistant_block, message.parts) if b is not None]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == message.role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": message.role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # The API wants tool results first in a user turn; the sort is stable.
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if system:
        system[-1]["cache_control"] = dict(_EPHEMERAL)
    return system, turns


def _user_block(
    part: TextPart | ToolResultPart | ImagePart | DocumentPart, vision: bool = True
) -> Block | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ToolResultPart):
        content: str | list[Block] = part.content
        if part.images:  # tool_result content may hold image blocks beside the text
            content = [{"type": "text", "text": part.content}]
            content += [_image_block(image, vision) for image in part.images]
        return {
            "type": "tool_result",
            "tool_use_id": part.call_id,
            "content": content,
            "is_error": part.is_error,
        }
    if isinstance(part, ImagePart):
        return _image_block(part, vision)
    if not vision:
        return {"type": "text", "text": document_text(part)}
    source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    if part.media_type != "application/pdf" and part.text is not None:
        source = {"type": "text", "media_type": "text/plain", "data": part.text}
    return {"type": "document", "source": source}


def _image_block(part: ImagePart, vision: bool) -> Block:
    """An image block within Anthropic's limits, or the text stand-in."""
    ready = prepare_image(part, ANTHROPIC_LIMITS, vision=vision)
    if isinstance(ready, str):
        return {"type": "text", "text": ready}
    source = {"type": "base64", "media_type": ready.media_type, "data": ready.data}
    return {"type": "image", "source": source}


def _assistant_block(part: AssistantPart) -> Block | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    return {"type": "tool_use", "id": part.id, "name": part.name, "input": part.args}


def _wire_tools(tools: Sequence[ToolDefinition]) -> list[Block]:
    wire: list[Block] = [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
    ]
    wire[-1]["cache_control"] = dict(_EPHEMERAL)
    return wire


def _tool_choice(choice: str) -> dict[str, str]:
    try:
        return dict(_TOOL_CHOICE[choice])
    except KeyError:
        raise UsageError(
            f"tool_choice {choice!r} is not supported; use 'auto', 'required' or 'none'."
        ) from None


# -- response mapping -----------------------------------------------------------------------


def _usage(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None,
    cache_write: int | None,
) -> Usage:
    read, write = cache_read or 0, cache_write or 0
    return Usage(
        requests=1,
        input_tokens=(input_tokens or 0) + read + write,
        output_tokens=output_tokens or 0,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def _finish(stop_reason: str | None) -> str | None:
    return None if stop_reason is None else _FINISH.get(stop_reason, stop_reason)


def _tool_call(call_id: str, name: str, args: object) -> ToolCallPart:
    """A tool call whose arguments are a JSON object, or kept raw (``args={}``) if not."""
    if isinstance(args, str):
        if not args.strip():
            return ToolCallPart(id=call_id, name=name)
        try:
            parsed = json.loads(args)
        except json.JSONDecodeError:
            return ToolCallPart(id=call_id, name=name, raw_args=args)
        if isinstance(parsed, dict):
            return ToolCallPart(id=call_id, name=name, args=parsed)
        return ToolCallPart(id=call_id, name=name, raw_args=args)
    if isinstance(args, dict):
        return ToolCallPart(id=call_id, name=name, args=args)
    return ToolCallPart(id=call_id, name=name, raw_args=json.dumps(args, default=str))


def _parse_message(response: WireMessage, model_name: str) -> AssistantMessage:
    parts: list[AssistantPart] = []
    for block in response.content:
        if block.type == "text" and block.text:
            parts.append(TextPart(text=block.text))
        elif block.type == "tool_use":
            parts.append(_tool_call(block.id, block.name, block.input))
    u = response.usage
    return AssistantMessage(
        parts=tuple(parts),
        usage=_usage(
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
        ),
        model_name=response.model or model_name,
        finish_reason=_finish(response.stop_reason),
    )


@dataclass
class _Block:
    kind: str  # "text" or "tool_use"
    pieces: list[str] = field(default_factory=list)
    id: str = ""
    name: str = ""


@dataclass
class _StreamAssembler:
    """Builds the final message from raw stream events; ``feed`` returns each text delta."""

    model_name: str
    blocks: dict[int, _Block] = field(default_factory=dict)
    tokens: dict[str, int | None] = field(default_factory=dict)
    stop_reason: str | None = None

    def reset(self) -> None:
        self.blocks.clear()
        self.tokens.clear()
        self.stop_reason = None

    def feed(self, event: RawMessageStreamEvent) -> str | None:
        if event.type == "message_start":
            self.model_name = event.message.model or self.model_name
            self._count(event.message.usage.model_dump())
        elif event.type == "content_block_start":
            block = event.content_block
            if block.type == "text":
                self.blocks[event.index] = _Block("text", [block.text])
                return block.text or None
            if block.type == "tool_use":
                self.blocks[event.index] = _Block("tool_use", id=block.id, name=block.name)
        elif event.type == "content_block_delta":
            return self._delta(event.index, event.delta)
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self._count(event.usage.model_dump())
        return None

    def _delta(self, index: int, delta: Any) -> str | None:
        block = self.blocks.get(index)
        if block is None:
            return None
        if delta.type == "text_delta":
            block.pieces.append(delta.text)
            return str(delta.text) or None
        if delta.type == "input_json_delta":
            block.pieces.append(delta.partial_json)
        return None

    def _count(self, usage: dict[str, Any]) -> None:
        """Usage counts are cumulative: later events replace the values they carry."""
        for key, value in usage.items():
            if isinstance(value, int):
                self.tokens[key] = value

    def message(self) -> AssistantMessage:
        parts: list[AssistantPart] = []
        for _, block in sorted(self.blocks.items()):
            text = "".join(block.pieces)
            if block.kind == "text" and text:
                parts.append(TextPart(text=text))
            elif block.kind == "tool_use":
                parts.append(_tool_call(block.id, block.name, text))
        t = self.tokens
        return AssistantMessage(
            parts=tuple(parts),
            usage=_usage(
                t.get("input_tokens"),
                t.get("output_tokens"),
                t.get("cache_read_input_tokens"),
                t.get("cache_creation_input_tokens"),
            ),
            model_name=self.model_name,
            finish_reason=_finish(self.stop_reason),
        )


# -- errors ---------------------------------------------------------------------------------


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    """Whether a failure is transient (429, 5xx, 529, connection, timeout) and how long to wait."""
    if isinstance(exc, anthropic.APIStatusError):
        if exc.status_code == 200:  # an error event inside a stream
            return exc.type in _RETRYABLE_STREAM_ERRORS, None
        return exc.status_code in _RETRYABLE_STATUS, retry_after_from(exc.response.headers)
    if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        return True, None
    return False, None


def _server_message(exc: anthropic.APIStatusError) -> str:
    if exc.api_message:
        return exc.api_message
    body = exc.body
    if isinstance(body, str) and body.strip():
        return body.strip()
    return exc.message


def _model_error(exc: BaseException, label: str, base_url: str) -> ModelError:
    retryable = _classify(exc)[0]
    if isinstance(exc, anthropic.APIStatusError):
        message = _server_message(exc).rstrip(".")
        if exc.status_code == 200:
            text = f"{label} stream failed with {exc.type or 'an error'}: {message}."
            return ModelError(text, status=None, retryable=retryable)
        text = f"{label} request failed with HTTP {exc.status_code}: {message}"
        if exc.status_code == 401:
            text += "; check that ANTHROPIC_API_KEY holds a valid key"
        return ModelError(text + ".", status=exc.status_code, retryable=retryable)
    if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        text = f"{label} request timed out talking to {base_url}; raise ModelSettings.timeout."
        return ModelError(text, retryable=True)
    if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        cause = exc.__cause__ or exc
        text = f"{label} request failed: cannot connect to {base_url} ({cause})."
        return ModelError(text, retryable=True)
    return ModelError(f"{label} request failed: {exc}.", retryable=retryable)
