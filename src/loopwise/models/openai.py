"""OpenAI chat-completions wire through the official ``openai`` SDK (request and streaming).

One adapter serves OpenAI and the servers that copy its wire: Ollama, vLLM and the
llama.cpp server. Tool results, which travel in a user message in loopwise, become
``role: tool`` messages here. The SDK's own retries are off: :func:`with_retries` retries
transient failures and honours Retry-After. How tools travel (``tool_mode``: native
``tools=``, constrained JSON, or ``auto``) is decided in ``_tool_mode``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from ..errors import ModelError, UsageError
from ..messages import (
    AssistantMessage,
    AssistantPart,
    Message,
    TextPart,
    ToolCallPart,
    ToolDefinition,
)
from ..tokens import estimate, tiktoken_counter
from . import ModelSettings
from ._openai_wire import (
    ChunkAssembler,
    estimated_usage,
    wire_finish,
    wire_messages,
    wire_tool,
    wire_tool_call,
    wire_usage,
)
from ._tool_mode import (
    ToolModeState,
    TurnParser,
    json_request,
    rejects_tools,
    resolve_tool_mode,
    tools_unused,
)
from ._vision import guess_vision
from .retry import RetryPolicy, retry_after_from, with_retries

try:
    import httpx2
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise UsageError(
        "The OpenAI SDK is not installed; run: pip install 'loopwise[openai]'."
    ) from exc

__all__ = ["OpenAIModel"]

_DEFAULT_RETRY = RetryPolicy()
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
_TOOL_CHOICES = frozenset({"auto", "required", "none"})
# Context windows of OpenAI's own models, by name prefix (longest prefix first).
_OPENAI_WINDOWS = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-5", 400_000),
    ("o3", 200_000),
    ("o4", 200_000),
)


class OpenAIModel:
    """A model behind the chat-completions wire; implements ``StreamingModel``.

    For ``provider="openai"`` the key and endpoint come from ``api_key``/``base_url`` or,
    through the SDK's defaults, ``OPENAI_API_KEY``/``OPENAI_BASE_URL``. Other providers
    (local servers) need no key: ``OPENAI_API_KEY`` is used when set (not for Ollama),
    else a placeholder.

    ``tool_mode`` (else ``LOOPWISE_TOOL_MODE``): ``native`` sends ``tools=``; ``json``
    describes the tools in the system prompt and holds each reply to a JSON schema through
    ``response_format``; ``auto`` (the default for every provider but ``openai``) starts
    native and switches to ``json`` for this object's life when the server refuses or
    ignores tools. :attr:`tool_mode` and :attr:`tool_mode_reason` say where it stands.
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
        tool_mode: str | None = None,
        vision: bool | None = None,
    ) -> None:
        self._model_name = model_name
        self._provider = provider
        # Images as image_url parts, PDFs as files (OpenAI) or text + page images; False:
        # text stand-ins. None: LOOPWISE_VISION=1/0, else judged by the model's name.
        self.vision = _vision_setting(vision, provider, model_name)
        self._retry = retry
        self._context_window = context_window
        self._stream_options_ok = True
        self._usage_estimated = False
        self._tool_state = ToolModeState(resolve_tool_mode(tool_mode, provider), self._label)
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

    def count_tokens(self, text: str) -> int:
        """The tokens of ``text``: exact for OpenAI's own models when their encoding is
        available offline (see :func:`loopwise.tokens.tiktoken_counter`), else estimated."""
        count = tiktoken_counter(self._model_name) if self._provider == "openai" else None
        return (count or estimate)(text)

    @property
    def tool_mode(self) -> str:
        """``native``, ``json``, or ``auto`` while it is not yet known which one works."""
        return self._tool_state.mode

    @property
    def tool_mode_reason(self) -> str | None:
        """Why ``auto`` settled on the current mode (None if it was chosen or is undecided)."""
        return self._tool_state.reason

    @property
    def _label(self) -> str:
        return f"{self._provider}:{self._model_name}"

    async def aclose(self) -> None:
        """Close the HTTP client and its kept-alive connections (before the event loop ends)."""
        await self._client.close()

    @property
    def usage_estimated(self) -> bool:
        """Whether any reply's token counts so far were estimated, not reported: the server
        sent no usage (llama_cpp.server when streaming, servers without ``stream_options``)."""
        return self._usage_estimated

    def _counted(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        response: AssistantMessage,
    ) -> AssistantMessage:
        """The response with its usage estimated where the server reported none."""
        counter = tiktoken_counter(self._model_name) if self._provider == "openai" else None
        usage = estimated_usage(messages, tools, response, counter)
        if usage is None:
            return response
        self._usage_estimated = True
        return replace(response, usage=usage)

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        """Send the conversation and return the model's response with its usage (estimated
        when the server reports none: see :attr:`usage_estimated`)."""
        return self._counted(messages, tools, await self._request(messages, tools, settings))

    async def _request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        state = self._tool_state
        if tools and state.mode == "json":
            return await self._json_request(messages, tools, settings)
        try:
            response = self._parse(await self._send(self._params(messages, tools, settings)))
        except ModelError as exc:
            if not (tools and state.mode == "auto" and rejects_tools(exc)):
                raise
            state.settle("json", f"the server refused tools ({exc})")
            return await self._json_request(messages, tools, settings)
        if tools and state.mode == "auto" and settings.tool_choice != "none":
            if await self._tools_unused(messages, tools, settings, response):
                return await self._json_request(messages, tools, settings)
        return response

    async def _send(self, params: dict[str, Any]) -> ChatCompletion:
        async def call() -> ChatCompletion:
            response: ChatCompletion = await self._client.chat.completions.create(**params)
            return response

        try:
            return await with_retries(call, _classify, self._retry)
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            raise self._error(exc) from exc
        except ValueError as exc:  # the SDK's json.loads of a body that is not JSON
            raise ModelError(
                f"{self._label} answered with a body that is not JSON ({exc}); check that "
                f"{self._client.base_url} is an OpenAI-compatible /v1 endpoint."
            ) from exc

    async def _send_parsed(
        self, params: dict[str, Any], turn: TurnParser | None
    ) -> AssistantMessage:
        return self._parse(await self._send(params), turn=turn)

    async def _tools_unused(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
        response: AssistantMessage,
    ) -> bool:
        """In ``auto``: whether this reply shows that the server does not do tool calls."""
        probe = self._params(messages, (), ModelSettings(max_tokens=1, timeout=settings.timeout))
        return await tools_unused(self._tool_state, response, tools, probe, self._send_parsed)

    async def _json_request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        """One turn as constrained JSON (see ``_tool_mode.json_request``)."""
        params = self._params(messages, (), settings)
        return await json_request(
            self._tool_state, params, messages, tools, settings.tool_choice, self._send_parsed
        )

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AsyncIterator[str | AssistantMessage]:
        """Yield text deltas as they arrive, then the complete :class:`AssistantMessage`.

        A failure before the first delta is retried like a request; after it, it is not,
        since the caller has already seen part of the answer. Until tool calling is known to
        work natively (see :attr:`tool_mode`), a turn with tools is decoded whole and its
        text yielded as one delta.
        """
        if tools and settings.tool_choice != "none" and self._tool_state.mode != "native":
            whole = await self.request(messages, tools, settings)
            if whole.text:
                yield whole.text
            yield whole
            return
        async for item in self._stream_chunks(messages, tools, settings):
            yield item

    async def _stream_chunks(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AsyncIterator[str | AssistantMessage]:
        params = self._params(messages, tools, settings)
        params["stream"] = True
        assembler = ChunkAssembler(self._model_name)

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
        except (ValueError, AttributeError, TypeError) as exc:  # garbage in the stream
            raise ModelError(
                f"{self._label} sent a stream event that is not a chat-completion chunk "
                f"({type(exc).__name__}: {exc})."
            ) from exc
        if assembler.finish_reason is None:
            kind = chunks.response.headers.get("content-type", "none")
            raise ModelError(
                f"{self._label} stream ended before the reply was finished (no finish_reason; "
                f"content-type {kind}): the server closed the connection early or is not "
                "OpenAI-compatible."
            )
        yield self._counted(messages, tools, assembler.message())

    async def _open_stream(self, params: dict[str, Any]) -> openai.AsyncStream[ChatCompletionChunk]:
        """Open the stream asking for usage (``stream_options``); a server that refuses the
        request (400/422: some refuse unknown fields) is asked once more without it, and if
        that works, never asked with it again."""
        create = self._client.chat.completions.create
        chunks: openai.AsyncStream[ChatCompletionChunk]
        if self._stream_options_ok:
            try:
                chunks = await create(**params, stream_options={"include_usage": True})
                return chunks
            except openai.APIStatusError as exc:
                if exc.status_code not in (400, 422):
                    raise
            chunks = await create(**params)  # a request bad for another reason fails here
            self._stream_options_ok = False
            return chunks
        chunks = await create(**params)
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
            "messages": wire_messages(
                messages, vision=self.vision, pdf_files=self._provider == "openai"
            ),
            tokens_key: settings.max_tokens,
        }
        if tools:
            if settings.tool_choice not in _TOOL_CHOICES:
                raise UsageError(
                    f"tool_choice {settings.tool_choice!r} is not supported; "
                    "use 'auto', 'required' or 'none'."
                )
            params["tools"] = [wire_tool(t) for t in tools]
            params["tool_choice"] = settings.tool_choice
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        if settings.stop_sequences:
            params["stop"] = list(settings.stop_sequences)
        if settings.timeout is not None:
            params["timeout"] = settings.timeout
        return params

    def _parse(
        self, completion: ChatCompletion, *, turn: TurnParser | None = None
    ) -> AssistantMessage:
        """The reply as a message; a body of another shape is a :class:`ModelError`."""
        if not isinstance(completion, ChatCompletion):
            shown = str(completion)[:80]
            raise ModelError(
                f"{self._label} answered with something that is not a chat completion "
                f"({shown!r}); check that {self._client.base_url} is an OpenAI-compatible "
                "/v1 endpoint."
            )
        if not completion.choices:
            raise ModelError(f"{self._label} returned a response with no choices.")
        try:
            return self._parsed(completion, turn=turn)
        except (AttributeError, TypeError) as exc:
            raise ModelError(
                f"{self._label} returned a malformed chat completion ({exc})."
            ) from exc

    def _parsed(self, completion: ChatCompletion, *, turn: TurnParser | None) -> AssistantMessage:
        choice = completion.choices[0]
        message = choice.message
        parts: list[AssistantPart] = [TextPart(text=message.content)] if message.content else []
        if turn is not None and (message.content or not message.tool_calls):
            parts = turn(message.content or "", choice.finish_reason)
        for call in message.tool_calls or []:
            if call.type == "function":
                parts.append(wire_tool_call(call.id, call.function.name, call.function.arguments))
        has_calls = any(isinstance(p, ToolCallPart) for p in parts)
        return AssistantMessage(
            parts=tuple(parts),
            usage=wire_usage(completion.usage),
            model_name=completion.model or self._model_name,
            finish_reason=wire_finish(choice.finish_reason, has_calls=has_calls),
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


def _vision_setting(vision: bool | None, provider: str, model_name: str) -> bool:
    if vision is not None:
        return vision
    env = os.environ.get("LOOPWISE_VISION", "").strip().lower()
    if env in ("1", "true", "yes", "0", "false", "no"):
        return env in ("1", "true", "yes")
    return guess_vision(provider, model_name)


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    """Whether a failure is transient (429, 5xx, connection, timeout) and how long to wait."""
    if isinstance(exc, openai.APIStatusError):
        if "validation error" in _server_message(exc).lower():
            return False, None  # a 5xx that refuses the request itself (llama-cpp-python)
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
