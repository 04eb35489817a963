"""OpenAI chat-completions wire through the official ``openai`` SDK (request and streaming).

One adapter serves OpenAI and the servers that copy its wire: Ollama, vLLM and the
llama.cpp server. Tool results, which travel in a user message in loopwise, become
``role: tool`` messages here. The SDK's own retries are off: :func:`with_retries` retries
transient failures and honours Retry-After.
"""

from __future__ import annotations

import json
import os
import uuid
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
from .retry import RetryPolicy, retry_after_from, with_retries

try:
    import httpx2
    import openai
    from openai.types import CompletionUsage
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise UsageError(
        "The OpenAI SDK is not installed; run: pip install 'loopwise[openai]'."
    ) from exc

__all__ = ["OpenAIModel"]

_DEFAULT_RETRY = RetryPolicy()
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
_TOOL_CHOICES = frozenset({"auto", "required", "none"})
_FINISH = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "max_tokens",
}
# Context windows of OpenAI's own models, by name prefix (longest prefix first).
_OPENAI_WINDOWS = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-5", 400_000),
    ("o3", 200_000),
    ("o4", 200_000),
)

WireMessage = dict[str, Any]


class OpenAIModel:
    """A model behind the chat-completions wire; implements ``StreamingModel``.

    For ``provider="openai"`` the key and endpoint come from ``api_key``/``base_url`` or,
    through the SDK's defaults, ``OPENAI_API_KEY``/``OPENAI_BASE_URL``. Other providers
    (local servers) need no key: ``OPENAI_API_KEY`` is used when set (not for Ollama),
    else a placeholder.
    """

    def __init__(
        self,
        model_name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        provider: str = "openai",
        retry: RetryPolicy = _DEFAULT_RETRY,
        client: openai.AsyncOpenAI | None = None,
        context_window: int | None = None,
    ) -> None:
        self._model_name = model_name
        self._provider = provider
        self._retry = retry
        self._context_window = context_window
        self._stream_options_ok = True
        self._client = client or _make_client(provider, base_url, api_key)

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def context_window(self) -> int | None:
        if self._context_window is not None or self._provider != "openai":
            return self._context_window
        for prefix, window in _OPENAI_WINDOWS:
            if self._model_name.startswith(prefix):
                return window
        return None

    @property
    def _label(self) -> str:
        return f"{self._provider}:{self._model_name}"

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        """Send the conversation and return the model's response with its usage."""
        params = self._params(messages, tools, settings)

        async def call() -> ChatCompletion:
            response: ChatCompletion = await self._client.chat.completions.create(**params)
            return response

        try:
            completion = await with_retries(call, _classify, self._retry)
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            raise self._error(exc) from exc
        return self._parse(completion)

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
        params["stream"] = True
        assembler = _ChunkAssembler(self._model_name)

        async def start() -> tuple[openai.AsyncStream[ChatCompletionChunk], str | None]:
            assembler.reset()
            chunks = await self._open_stream(params)
            try:
                while True:
                    delta = assembler.feed(await chunks.__anext__())
                    if delta:
                        return chunks, delta
            except StopAsyncIteration:
                return chunks, None
            except BaseException:
                await chunks.close()
                raise

        try:
            chunks, first = await with_retries(start, _classify, self._retry)
            try:
                if first:
                    yield first
                async for chunk in chunks:
                    delta = assembler.feed(chunk)
                    if delta:
                        yield delta
            finally:
                await chunks.close()
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            raise self._error(exc) from exc
        yield assembler.message()

    async def _open_stream(self, params: dict[str, Any]) -> openai.AsyncStream[ChatCompletionChunk]:
        """Open the stream; a server that rejects ``stream_options`` is asked again without."""
        if not self._stream_options_ok:
            params.pop("stream_options", None)
            chunks: openai.AsyncStream[ChatCompletionChunk]
            chunks = await self._client.chat.completions.create(**params)
            return chunks
        params["stream_options"] = {"include_usage": True}
        try:
            chunks = await self._client.chat.completions.create(**params)
        except openai.BadRequestError as exc:
            if "stream_options" not in f"{exc.message} {exc.body}":
                raise
            self._stream_options_ok = False
            params.pop("stream_options", None)
            chunks = await self._client.chat.completions.create(**params)
        return chunks

    def _params(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> dict[str, Any]:
        tokens_key = "max_completion_tokens" if self._provider == "openai" else "max_tokens"
        params: dict[str, Any] = {
            "model": self._model_name,
            "messages": _wire_messages(messages),
            tokens_key: settings.max_tokens,
        }
        if tools:
            if settings.tool_choice not in _TOOL_CHOICES:
                raise UsageError(
                    f"tool_choice {settings.tool_choice!r} is not supported; "
                    "use 'auto', 'required' or 'none'."
                )
            params["tools"] = [_wire_tool(t) for t in tools]
            params["tool_choice"] = settings.tool_choice
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        if settings.stop_sequences:
            params["stop"] = list(settings.stop_sequences)
        if settings.timeout is not None:
            params["timeout"] = settings.timeout
        return params

    def _parse(self, completion: ChatCompletion) -> AssistantMessage:
        if not completion.choices:
            raise ModelError(f"{self._label} returned a response with no choices.")
        choice = completion.choices[0]
        message = choice.message
        parts: list[AssistantPart] = [TextPart(text=message.content)] if message.content else []
        for call in message.tool_calls or []:
            if call.type == "function":
                parts.append(_tool_call(call.id, call.function.name, call.function.arguments))
        return AssistantMessage(
            parts=tuple(parts),
            usage=_usage(completion.usage),
            model_name=completion.model or self._model_name,
            finish_reason=_finish(choice.finish_reason, has_calls=bool(message.tool_calls)),
        )

    def _error(self, exc: BaseException) -> ModelError:
        return _model_error(exc, self._label, str(self._client.base_url))


def _make_client(provider: str, base_url: str | None, api_key: str | None) -> openai.AsyncOpenAI:
    if api_key is None and provider != "openai":
        env_key = os.environ.get("OPENAI_API_KEY") if provider != "ollama" else None
        api_key = env_key or "not-needed"
    try:
        return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    except openai.OpenAIError as exc:
        if api_key is None and not os.environ.get("OPENAI_API_KEY"):
            raise UsageError(
                "No OpenAI API key: set OPENAI_API_KEY or pass api_key to OpenAIModel."
            ) from exc
        raise UsageError(f"Cannot create the OpenAI client: {exc}") from exc


# -- request mapping ------------------------------------------------------------------------


def _wire_messages(messages: Sequence[Message]) -> list[WireMessage]:
    wire: list[WireMessage] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            wire.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            wire.extend(_user_messages(message))
        else:
            wire.append(_assistant_message(message))
    return wire


def _user_messages(message: UserMessage) -> list[WireMessage]:
    """Tool results as ``tool`` messages first, then the rest as one user message."""
    out: list[WireMessage] = []
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            out.append({"role": "tool", "tool_call_id": part.call_id, "content": part.content})
        elif isinstance(part, TextPart):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            url = f"data:{part.media_type};base64,{part.data}"
            content.append({"type": "image_url", "image_url": {"url": url}})
        else:
            content.append({"type": "text", "text": _document_text(part)})
    if content:
        if all(c["type"] == "text" for c in content):
            # Plain text as a string: some compatible servers accept nothing else.
            joined = "\n\n".join(c["text"] for c in content)
            out.append({"role": "user", "content": joined})
        else:
            out.append({"role": "user", "content": content})
    return out


def _document_text(part: DocumentPart) -> str:
    if part.text is not None:
        return part.text
    size = len(part.data) * 3 // 4
    return f"[document: {part.media_type}, {size} bytes, not shown]"


def _assistant_message(message: AssistantMessage) -> WireMessage:
    text = message.text
    wire: WireMessage = {"role": "assistant", "content": text or None}
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {
                "name": call.name,
                "arguments": call.raw_args if call.raw_args is not None else json.dumps(call.args),
            },
        }
        for call in message.tool_calls
    ]
    if calls:
        wire["tool_calls"] = calls
    elif not text:
        wire["content"] = ""
    return wire


def _wire_tool(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


# -- response mapping -----------------------------------------------------------------------


def _usage(usage: CompletionUsage | None) -> Usage:
    if usage is None:
        return Usage(requests=1)
    details = usage.prompt_tokens_details
    return Usage(
        requests=1,
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cache_read_tokens=(details.cached_tokens or 0) if details else 0,
        cache_write_tokens=(details.cache_write_tokens or 0) if details else 0,
    )


def _finish(reason: str | None, *, has_calls: bool) -> str | None:
    """Normalised finish reason; a server that says ``stop`` after tool calls means them."""
    if reason is None:
        return "tool_calls" if has_calls else None
    finish = _FINISH.get(reason, reason)
    return "tool_calls" if has_calls and finish == "stop" else finish


def _tool_call(call_id: str | None, name: str, arguments: str | None) -> ToolCallPart:
    """A tool call whose arguments are a JSON object, or kept raw (``args={}``) if not."""
    call_id = call_id or f"call_{uuid.uuid4().hex[:12]}"
    text = arguments or ""
    if not text.strip():
        return ToolCallPart(id=call_id, name=name)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return ToolCallPart(id=call_id, name=name, raw_args=text)
    if not isinstance(parsed, dict):
        return ToolCallPart(id=call_id, name=name, raw_args=text)
    return ToolCallPart(id=call_id, name=name, args=parsed)


@dataclass
class _Call:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _ChunkAssembler:
    """Builds the final message from chunks; ``feed`` returns each text delta."""

    model_name: str
    text: list[str] = field(default_factory=list)
    calls: list[_Call] = field(default_factory=list)
    slots: dict[int, int] = field(default_factory=dict)  # wire index -> position in calls
    finish_reason: str | None = None
    usage: CompletionUsage | None = None

    def reset(self) -> None:
        self.text.clear()
        self.calls.clear()
        self.slots.clear()
        self.finish_reason = None
        self.usage = None

    def feed(self, chunk: ChatCompletionChunk) -> str | None:
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model_name = chunk.model
        if not chunk.choices:
            return None
        choice = chunk.choices[0]
        self.finish_reason = choice.finish_reason or self.finish_reason
        for piece in choice.delta.tool_calls or []:
            self._call_piece(piece.index, piece.id, piece.function)
        content = choice.delta.content
        if content:
            self.text.append(content)
            return content
        return None

    def _call_piece(self, index: int, call_id: str | None, function: Any) -> None:
        slot = self.slots.get(index)
        # A new id at a known index is a new call (some servers send every call at index 0).
        if slot is None or (call_id and self.calls[slot].id and call_id != self.calls[slot].id):
            self.slots[index] = slot = len(self.calls)
            self.calls.append(_Call())
        call = self.calls[slot]
        call.id = call.id or call_id
        if function is not None:
            call.name += function.name or ""
            call.arguments.append(function.arguments or "")

    def message(self) -> AssistantMessage:
        parts: list[AssistantPart] = []
        text = "".join(self.text)
        if text:
            parts.append(TextPart(text=text))
        for call in self.calls:
            parts.append(_tool_call(call.id, call.name, "".join(call.arguments)))
        return AssistantMessage(
            parts=tuple(parts),
            usage=_usage(self.usage),
            model_name=self.model_name,
            finish_reason=_finish(self.finish_reason, has_calls=bool(self.calls)),
        )


# -- errors ---------------------------------------------------------------------------------


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    """Whether a failure is transient (429, 5xx, connection, timeout) and how long to wait."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS, retry_after_from(exc.response.headers)
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
        return True, None
    return False, None


def _server_message(exc: openai.APIError) -> str:
    """The server's own words: ``error.message`` in OpenAI's shape, or what it sent."""
    body = exc.body
    if isinstance(body, dict):
        found = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(found, str) and found:
            return found
    if isinstance(body, str) and body.strip():
        return body.strip()
    return exc.message


def _model_error(exc: BaseException, label: str, base_url: str) -> ModelError:
    retryable = _classify(exc)[0]
    if isinstance(exc, openai.APIStatusError):
        message = _server_message(exc).rstrip(".")
        text = f"{label} request failed with HTTP {exc.status_code}: {message}"
        if exc.status_code == 401:
            text += "; check that OPENAI_API_KEY holds a valid key"
        return ModelError(text + ".", status=exc.status_code, retryable=retryable)
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException)):
        text = f"{label} request timed out talking to {base_url}; raise ModelSettings.timeout."
        return ModelError(text, retryable=True)
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
        cause = exc.__cause__ or exc
        text = f"{label} request failed: cannot connect to {base_url} ({cause})."
        return ModelError(text, retryable=True)
    if isinstance(exc, openai.APIError):
        text = f"{label} stream failed: {_server_message(exc).rstrip('.')}."
        return ModelError(text, retryable=retryable)
    return ModelError(f"{label} request failed: {exc}.", retryable=retryable)
