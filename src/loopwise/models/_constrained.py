"""Tool calls as constrained JSON, for models and servers without native tool calling.

Each turn is one JSON object, ``{"tool": name, "arguments": {...}}`` or
``{"answer": "..."}``, decoded under :func:`turn_schema` (one option per tool, so a call
always names a real tool and has arguments of its declared shape). The tools and this
format are described in the system prompt; the history is replayed as plain chat turns in
which earlier calls appear as the JSON the model wrote. Used by the embedded ``local``
model and by :class:`~loopwise.models.openai.OpenAIModel` in ``json`` tool mode.

:func:`decoding_schema` is the stricter form the embedded model decodes under: argument
objects explicitly closed to undeclared keys and strings bounded, so a small model can
neither add keys of any type nor stream a string forever.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

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
    UserMessage,
)
from ._vision import document_text, stand_in_for

__all__ = [
    "MAX_DECODED_STRING",
    "chat_messages",
    "closed_schema",
    "decoding_schema",
    "parse_turn",
    "turn_schema",
]

# Small models tend to repeat a call whose result they already have: say what comes next.
_AFTER_RESULT = 'If this answers the question, reply {"answer": "..."} now.'

WireMessage = dict[str, Any]

# Decoding only: a string argument without maxLength gets this many characters at most.
MAX_DECODED_STRING = 2000
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems", "items"})
_SCHEMA_ONE = frozenset(
    {"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"}
)


def turn_schema(tools: Sequence[ToolDefinition], *, answer: bool) -> dict[str, Any]:
    """One JSON object per turn: a call to one of the tools, or (if allowed) the answer."""
    options: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for tool in tools:
        parameters = dict(tool.parameters)
        defs.update(parameters.pop("$defs", {}))  # refs point at the root: hoist them there
        options.append(
            {
                "type": "object",
                "properties": {"tool": {"const": tool.name}, "arguments": parameters},
                "required": ["tool", "arguments"],
            }
        )
    if answer:
        options.append(
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            }
        )
    schema: dict[str, Any] = {"oneOf": options}
    if defs:
        schema["$defs"] = defs
    return schema


def decoding_schema(
    tools: Sequence[ToolDefinition], *, answer: bool, max_string: int = MAX_DECODED_STRING
) -> dict[str, Any]:
    """:func:`turn_schema` with each tool's arguments passed through :func:`closed_schema`."""
    closed = [
        ToolDefinition(
            name=t.name,
            description=t.description,
            parameters=closed_schema(t.parameters, max_string),
        )
        for t in tools
    ]
    return turn_schema(closed, answer=answer)


def closed_schema(schema: dict[str, Any], max_string: int = MAX_DECODED_STRING) -> dict[str, Any]:
    """A copy for decoding: objects with properties closed unless they say otherwise, strings
    without maxLength capped, ``pattern`` left to validation, ``definitions`` as ``$defs``."""
    # llama-cpp-python's regex translation refuses unanchored patterns (the JSON Schema norm)
    # and mistranslates escapes like \d, so patterns are checked by the tool, not the grammar.
    closed: dict[str, Any] = _closed(schema, max_string)
    if "definitions" in closed:  # draft-07 style: where turn_schema hoists them, as $defs
        closed["$defs"] = {**closed.pop("definitions"), **closed.get("$defs", {})}
    return closed


def _closed(node: Any, cap: int) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _closed_member(k, v, cap) for k, v in node.items() if k != "pattern"}
    if "properties" in out and not {"additionalProperties", "patternProperties"} & out.keys():
        out["additionalProperties"] = False
    if out.get("type") == "string" and not {"maxLength", "enum", "const"} & out.keys():
        out["maxLength"] = max(cap, out.get("minLength", 0))
    return out


def _closed_member(key: str, value: Any, cap: int) -> Any:
    """A keyword's value with the subschemas in it closed; data (enum, default...) as is."""
    if key in _SCHEMA_MAPS and isinstance(value, dict):
        return {name: _closed(sub, cap) for name, sub in value.items()}
    if key in _SCHEMA_LISTS and isinstance(value, list):
        return [_closed(sub, cap) for sub in value]
    if key in _SCHEMA_ONE:
        return _closed(value, cap)
    if key == "$ref" and isinstance(value, str) and value.startswith("#/definitions/"):
        return "#/$defs/" + value.removeprefix("#/definitions/")
    return value


def _tools_prompt(tools: Sequence[ToolDefinition]) -> str:
    lines = ["You can use these tools:"]
    for tool in tools:
        arguments = json.dumps(tool.parameters.get("properties", {}), ensure_ascii=False)
        lines.append(f"- {tool.name}: {tool.description} Arguments: {arguments}")
    lines.append(
        'Reply with one JSON object only: {"tool": "<tool name>", "arguments": {...}} to '
        'call a tool, or {"answer": "<your answer>"} once you know the answer.'
    )
    return "\n".join(lines)


def chat_messages(
    messages: Sequence[Message], tools: Sequence[ToolDefinition]
) -> list[WireMessage]:
    """The history as plain chat turns; calls appear as the JSON the model writes."""
    system = [m.content for m in messages if isinstance(m, SystemMessage)]
    if tools:
        system.append(_tools_prompt(tools))
    wire: list[WireMessage] = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    for message in messages:
        if isinstance(message, UserMessage):
            _append(wire, "user", _user_text(message))
        elif isinstance(message, AssistantMessage):
            _append(wire, "assistant", _assistant_text(message, json_turns=bool(tools)))
    return wire


def _append(wire: list[WireMessage], role: str, content: str) -> None:
    if wire and wire[-1]["role"] == role:
        wire[-1]["content"] += "\n\n" + content
    else:
        wire.append({"role": role, "content": content})


def _user_text(message: UserMessage) -> str:
    texts: list[str] = []
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            verb = "failed" if part.is_error else "returned"
            shown = "".join(f"\n{stand_in_for(image)}" for image in part.images)
            texts.append(f"Tool {part.name} {verb}: {part.content}{shown}\n{_AFTER_RESULT}")
        elif isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            texts.append(stand_in_for(part))
        elif isinstance(part, DocumentPart):
            texts.append(document_text(part))
    return "\n\n".join(t for t in texts if t)


def _assistant_text(message: AssistantMessage, *, json_turns: bool) -> str:
    calls = message.tool_calls
    if calls:
        return "\n".join(
            json.dumps({"tool": c.name, "arguments": c.args if c.raw_args is None else c.raw_args})
            for c in calls
        )
    if json_turns and message.finish_reason != "max_tokens":  # a cut-off turn stays as it was
        return json.dumps({"answer": message.text})
    return message.text


def parse_turn(text: str) -> list[AssistantPart]:
    """A decoded JSON turn as a tool call or an answer; text cut off mid-JSON is kept as is."""
    try:
        turn = json.loads(text)
    except json.JSONDecodeError:
        return [TextPart(text=text)] if text else []
    if isinstance(turn, dict) and isinstance(turn.get("tool"), str):
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        arguments = turn.get("arguments")
        if isinstance(arguments, dict):
            return [ToolCallPart(id=call_id, name=turn["tool"], args=arguments)]
        return [ToolCallPart(id=call_id, name=turn["tool"], raw_args=json.dumps(arguments))]
    if isinstance(turn, dict) and isinstance(turn.get("answer"), str):
        return [TextPart(text=turn["answer"])]
    return [TextPart(text=text)]
