"""How a chat-completions server gets tools: natively, as constrained JSON, or found out.

``native`` sends ``tools=`` on the wire. ``json`` sends no tools: the tools and the turn
format are described in the system prompt and the reply is held to
:func:`~loopwise.models._constrained.turn_schema` through ``response_format``. ``auto``
starts native and switches to ``json`` for the rest of the model object's life when the
server rejects ``tools``, answers with a call written as text, or never showed the tools to
the model (the prompt costs no more tokens with them than without). In ``json`` mode a
reply that is not one such object becomes an invalid call (:func:`json_turn`), which the
loop answers with an error and the replay turns into a correction: never a final answer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ModelError, UsageError
from ..messages import (
    AssistantMessage,
    AssistantPart,
    Message,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    UserMessage,
)
from ._constrained import chat_messages, parse_turn, turn_schema

__all__ = [
    "INVALID_TURN",
    "TOOL_MODES",
    "ToolModeState",
    "TurnParser",
    "json_request",
    "json_turn",
    "looks_like_call",
    "rejects_tools",
    "resolve_tool_mode",
    "tools_unused",
]

# Reads a reply's text (and its finish reason) as a JSON turn.
TurnParser = Callable[[str, str | None], list[AssistantPart]]
# Sends request parameters and returns the reply, read as a JSON turn by the parser if given.
Send = Callable[[dict[str, Any], TurnParser | None], Awaitable[AssistantMessage]]

logger = logging.getLogger("loopwise.models")

TOOL_MODES = ("auto", "native", "json")
ENV_VAR = "LOOPWISE_TOOL_MODE"
# Statuses with which a server refuses a request field it does not support (or fails on it).
_UNSUPPORTED_STATUS = frozenset({400, 404, 415, 422, 500, 501})
_NAME_KEYS = ("tool", "name", "function", "tool_name")
# The name of the call that a reply which is not a JSON turn becomes (no tool has it), and
# the prefix of its id, by which the history replay knows it.
INVALID_TURN = "invalid_json_reply"
_INVALID_ID = "call_badturn_"
_MAX_KEPT = 4000  # characters of a broken reply kept for the model to see
_FENCE = re.compile(r"\A```[A-Za-z]*\s*\n(.*?)\n?```\Z", re.DOTALL)


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
        bare = await send(probe, None)
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

    ``params`` is the request without tools; the history is replayed as plain chat turns,
    an earlier reply that was not a JSON turn as it was, followed by why it was refused.
    """
    active = () if tool_choice == "none" else tools
    answer = tool_choice != "required"
    params = {**params, "messages": chat_messages(replayed(messages, answer), active)}
    if not active:
        return await send(params, None)
    formats = json_formats(turn_schema(active, answer=answer))
    failures: list[str] = []

    def parse(text: str, finish_reason: str | None) -> list[AssistantPart]:
        return json_turn(text, active, answer=answer, cut_off=finish_reason == "length")

    for index in range(state.format_index, len(formats)):
        name, response_format = formats[index]
        try:
            reply = await send({**params, "response_format": response_format}, parse)
        except ModelError as exc:
            if not format_unsupported(exc):
                raise
            failures.append(f"{name}: HTTP {exc.status}")
            continue
        state.format_index = index
        return reply
    raise neither_error(state, failures)


# -- replies that are not a JSON turn -----------------------------------------------------------


def json_turn(
    text: str, tools: Sequence[ToolDefinition], *, answer: bool, cut_off: bool = False
) -> list[AssistantPart]:
    """A reply in ``json`` mode: a call, an answer, or (anything else) an invalid call.

    Only the whole reply as one ``{"tool", "arguments"}`` or ``{"answer"}`` object (in a
    Markdown fence at most) is a turn. Anything else becomes a call the loop answers with
    an error, so the model is told and can correct it; never a final answer. A reply cut
    off at the token limit stays text: the loop asks for a shorter one.
    """
    if cut_off:
        return parse_turn(text)
    turn, problem = _decode(text)
    if problem is None and isinstance(turn.get("tool"), str):
        return parse_turn(json.dumps(turn))
    problem = problem or _answer_problem(turn, answer)
    if problem is None:
        return [TextPart(text=turn["answer"])]
    return [_invalid_call(text, tools, problem)]


def _decode(text: str) -> tuple[dict[str, Any], str | None]:
    """The reply as one JSON object, or why it is not one."""
    text = text.strip()
    fenced = _FENCE.match(text)
    body = fenced[1].strip() if fenced else text
    if not body:
        return {}, "it is empty"
    try:
        value, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as exc:
        return {}, f"it is not valid JSON ({exc.msg} at character {exc.pos})"
    if body[end:].strip():
        return {}, "it has text after the JSON object"
    if not isinstance(value, dict):
        return {}, f"it is a JSON {type(value).__name__}, not an object"
    return value, None


def _answer_problem(turn: dict[str, Any], answer: bool) -> str | None:
    """Why an object without a tool name is not a valid answer (None: it is one)."""
    if "tool" in turn:
        return '"tool" must be the name of a tool'
    if "answer" not in turn:
        keys = ", ".join(repr(k)[:40] for k in list(turn)[:5]) or "no keys"
        return f'it has neither "tool" nor "answer" (it has {keys})'
    if not isinstance(turn["answer"], str):
        return '"answer" must be a string'
    if not answer:
        return "a tool call is required here, not an answer"
    return None


def _problem(text: str, answer: bool) -> str:
    """Why a kept broken reply was refused (worked out again from its text)."""
    turn, problem = _decode(text)
    return problem or _answer_problem(turn, answer) or "it is not a valid turn"


def _invalid_call(text: str, tools: Sequence[ToolDefinition], problem: str) -> ToolCallPart:
    """The invalid call for a broken reply: named after the one tool it quotes, if any."""
    quoted = [t.name for t in tools if f'"{t.name}"' in text]
    name = quoted[0] if len(quoted) == 1 else INVALID_TURN
    call_id = f"{_INVALID_ID}{uuid.uuid4().hex[:12]}"
    logger.info("json tool mode: a reply that is not a JSON turn (%s): %.200r", problem, text)
    return ToolCallPart(id=call_id, name=name, raw_args=text[:_MAX_KEPT])


def replayed(messages: Sequence[Message], answer: bool) -> list[Message]:
    """The history with each invalid reply shown as the model wrote it and its error
    result replaced by a correction that says why and what a turn must look like."""
    out: list[Message] = []
    problems: dict[str, str] = {}
    for message in messages:
        invalid = _invalid_calls(message) if isinstance(message, AssistantMessage) else []
        if isinstance(message, AssistantMessage) and invalid:
            raw = "\n".join(c.raw_args or "" for c in invalid)
            problems.update({c.id: _problem(c.raw_args or "", answer) for c in invalid})
            # chat_messages replays a cut-off turn verbatim: this one too, as it was written.
            out.append(replace(message, parts=(TextPart(text=raw),), finish_reason="max_tokens"))
        elif isinstance(message, UserMessage) and problems:
            out.append(_corrected(message, answer, problems))
        else:
            out.append(message)
    return out


def _invalid_calls(message: AssistantMessage) -> list[ToolCallPart]:
    return [c for c in message.tool_calls if c.id.startswith(_INVALID_ID)]


def _corrected(message: UserMessage, answer: bool, problems: dict[str, str]) -> UserMessage:
    parts = [
        TextPart(text=correction(answer, problems[p.call_id]))
        if isinstance(p, ToolResultPart) and p.call_id in problems
        else p
        for p in message.parts
    ]
    return replace(message, parts=tuple(parts))


def correction(answer: bool, problem: str) -> str:
    """What the model is told after a reply that was not a JSON turn."""
    options = '{"tool": "<tool name>", "arguments": {...}} to call a tool'
    if answer:
        options += ', or {"answer": "<your answer>"} to answer'
    return (
        f"[loopwise] Your last reply was not a valid turn: {problem}. Reply with one JSON "
        f"object and nothing else: {options}."
    )
