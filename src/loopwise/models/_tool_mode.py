"""How a chat-completions server gets tools: natively, as constrained JSON, or found out.

``native`` sends ``tools=`` on the wire. ``json`` sends no tools: the tools and the turn
format are described in the system prompt and the reply is held to
:func:`~loopwise.models._constrained.turn_schema` through ``response_format``. ``auto``
starts native and switches to ``json`` for the rest of the model object's life when the
server rejects ``tools``, answers with a call written as text, or never showed the tools to
the model (the prompt costs no more tokens with them than without).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError, UsageError
from ..messages import AssistantMessage, Message, ToolDefinition
from ._constrained import chat_messages, turn_schema

__all__ = [
    "TOOL_MODES",
    "ToolModeState",
    "json_request",
    "looks_like_call",
    "rejects_tools",
    "resolve_tool_mode",
    "tools_unused",
]

# Sends request parameters and returns the parsed reply (``True``: parse it as a JSON turn).
Send = Callable[[dict[str, Any], bool], Awaitable[AssistantMessage]]

logger = logging.getLogger("loopwise.models")

TOOL_MODES = ("auto", "native", "json")
ENV_VAR = "LOOPWISE_TOOL_MODE"
# Statuses with which a server refuses a request field it does not support (or fails on it).
_UNSUPPORTED_STATUS = frozenset({400, 404, 415, 422, 500, 501})
_NAME_KEYS = ("tool", "name", "function", "tool_name")


def resolve_tool_mode(value: str | None, provider: str) -> str:
    """The mode asked for (argument, else ``LOOPWISE_TOOL_MODE``), else the provider default.

    OpenAI's own API always has tool calling: ``native``; every other server: ``auto``.
    """
    chosen = value or os.environ.get(ENV_VAR) or ("native" if provider == "openai" else "auto")
    if chosen not in TOOL_MODES:
        where = "tool_mode" if value else ENV_VAR
        raise UsageError(f"{where} must be one of {', '.join(TOOL_MODES)}, not {chosen!r}.")
    return chosen


@dataclass
class ToolModeState:
    """The current mode of one model object, why it is so, and what has been found out."""

    mode: str
    label: str
    reason: str | None = None
    probed: bool = False
    format_index: int = 0  # the first of json_formats() the server is known to accept

    def settle(self, mode: str, reason: str) -> None:
        """Leave ``auto`` for good; a switch to ``json`` is logged with its reason."""
        self.mode, self.reason = mode, reason
        if mode == "json":
            logger.warning("%s: switching to tool mode 'json': %s", self.label, reason)
        else:
            logger.info("%s: keeping tool mode 'native': %s", self.label, reason)


def rejects_tools(exc: ModelError) -> bool:
    """Whether an HTTP error refuses the ``tools`` field (vLLM, Ollama and others name it)."""
    text = str(exc).lower()
    return exc.status in _UNSUPPORTED_STATUS and ("tool" in text or "function" in text)


def looks_like_call(text: str, tools: Sequence[ToolDefinition]) -> bool:
    """Whether a reply with no tool call holds one written as text: a tagged call, or a JSON
    object that names one of the tools (``{"name": "add", "arguments": ...}`` and the like).
    """
    if "<tool_call>" in text or "<function=" in text:
        return True
    start = text.find("{")
    if start < 0:
        return False
    names = {t.name for t in tools}
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:  # cut off or sloppy: does it at least quote a tool's name?
        return any(f'"{name}"' in text[start:] for name in names)
    if not isinstance(value, dict):
        return False
    named = [value.get(key) for key in _NAME_KEYS]
    named += [v.get("name") for v in named if isinstance(v, dict)]  # {"function": {"name": ..}}
    return any(isinstance(v, str) and v in names for v in named)


def tools_ignored(with_tools: int, without: int) -> bool | None:
    """Whether the tools never reached the prompt (same token count); None when unknown."""
    if with_tools <= 0 or without <= 0:
        return None
    return with_tools <= without


def json_formats(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``response_format`` variants, most common first: the OpenAI ``json_schema`` form
    (OpenAI, vLLM, llama.cpp's llama-server, Ollama), then llama-cpp-python's own
    ``json_object`` with a ``schema``."""
    return [
        (
            "json_schema",
            {"type": "json_schema", "json_schema": {"name": "turn", "schema": schema}},
        ),
        ("json_object+schema", {"type": "json_object", "schema": schema}),
    ]


def format_unsupported(exc: ModelError) -> bool:
    """Whether an error answers a ``response_format`` the server does not take."""
    return exc.status in _UNSUPPORTED_STATUS


def neither_error(state: ToolModeState, failures: Sequence[str]) -> ModelError:
    """The error for a server that takes neither tools nor a JSON-schema response format."""
    tried = "; ".join(failures)
    if state.reason is None:  # json was asked for, not found out
        return ModelError(
            f"{state.label} does not accept a JSON-schema response_format ({tried}); use "
            "tool_mode 'native' or 'auto' if the server calls tools itself."
        )
    return ModelError(
        f"{state.label} supports neither tool calling ({state.reason}) nor a JSON-schema "
        f"response_format ({tried}); serve a model with tool calling (vLLM "
        "--enable-auto-tool-choice, llama-server --jinja, an Ollama model with tools) or a "
        "server that accepts response_format json_schema."
    )


async def tools_unused(
    state: ToolModeState,
    response: AssistantMessage,
    tools: Sequence[ToolDefinition],
    probe: dict[str, Any],
    send: Send,
) -> bool:
    """In ``auto``: whether a reply to a request with tools shows they do not work natively.

    A tool call settles ``native``; a call written as text settles ``json``; a reply with
    neither is followed, once, by ``probe`` (the same request without tools, 1 token): if
    the prompt was no longer with the tools than without, they never reached the model.
    """
    if response.tool_calls:
        state.settle("native", "the server answered with a tool call")
        return False
    if looks_like_call(response.text, tools):
        state.settle("json", "the server wrote a tool call as text instead of calling it")
        return True
    if state.probed:
        return False
    state.probed = True
    try:
        bare = await send(probe, False)
    except ModelError:
        return False
    with_tools, without = response.usage.input_tokens, bare.usage.input_tokens
    ignored = tools_ignored(with_tools, without)
    counts = f"{with_tools} prompt tokens with the tools, {without} without"
    if ignored:
        state.settle("json", f"the tools never reached the model's prompt ({counts})")
    elif ignored is False:
        state.settle("native", f"the tools reached the model's prompt ({counts})")
    return bool(ignored)


async def json_request(
    state: ToolModeState,
    params: dict[str, Any],
    messages: Sequence[Message],
    tools: Sequence[ToolDefinition],
    tool_choice: str,
    send: Send,
) -> AssistantMessage:
    """One turn as constrained JSON, in the first ``response_format`` the server takes.

    ``params`` is the request without tools; the history is replayed as plain chat turns.
    """
    active = () if tool_choice == "none" else tools
    params = {**params, "messages": chat_messages(messages, active)}
    if not active:
        return await send(params, False)
    formats = json_formats(turn_schema(active, answer=tool_choice != "required"))
    failures: list[str] = []
    for index in range(state.format_index, len(formats)):
        name, response_format = formats[index]
        try:
            reply = await send({**params, "response_format": response_format}, True)
        except ModelError as exc:
            if not format_unsupported(exc):
                raise
            failures.append(f"{name}: HTTP {exc.status}")
            continue
        state.format_index = index
        return reply
    raise neither_error(state, failures)
