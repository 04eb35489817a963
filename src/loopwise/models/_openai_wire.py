"""The chat-completions wire format: loopwise messages to and from OpenAI's JSON.

Pure conversion, no I/O: messages and tool definitions to request dicts (tool results as
``role: tool`` messages, images as data URLs, PDFs as ``file`` parts or text), and
completions or stream chunks back to an :class:`AssistantMessage`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk

from ..context import estimate_tokens, tools_tokens
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
from ..tokens import Counter, estimate
from ._vision import OPENAI_LIMITS, document_text, pdf_page_images, prepare_image

WireMessage = dict[str, Any]
_FINISH = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "max_tokens",
}


def wire_messages(
    messages: Sequence[Message], *, vision: bool = True, pdf_files: bool = False
) -> list[WireMessage]:
    wire: list[WireMessage] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            wire.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            wire.extend(user_messages(message, vision=vision, pdf_files=pdf_files))
        else:
            wire.append(assistant_message(message))
    return wire


def user_messages(
    message: UserMessage, *, vision: bool = True, pdf_files: bool = False
) -> list[WireMessage]:
    """Tool results as ``tool`` messages first, then the rest as one user message.

    ``tool`` messages carry text only: a result's images follow in the user message,
    after a note naming the call they belong to.
    """
    out: list[WireMessage] = []
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            out.append({"role": "tool", "tool_call_id": part.call_id, "content": part.content})
            if part.images:
                note = f"[images returned by tool call {part.call_id} ({part.name}):]"
                content.append({"type": "text", "text": note})
                content.extend(image_content(image, vision) for image in part.images)
        elif isinstance(part, TextPart):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            content.append(image_content(part, vision))
        else:
            content.extend(document_content(part, vision, pdf_files))
    if content:
        if all(c["type"] == "text" for c in content):
            # Plain text as a string: some compatible servers accept nothing else.
            joined = "\n\n".join(c["text"] for c in content)
            out.append({"role": "user", "content": joined})
        else:
            out.append({"role": "user", "content": content})
    return out


def image_content(part: ImagePart, vision: bool) -> dict[str, Any]:
    """An ``image_url`` data URL within OpenAI's limits, or the text stand-in."""
    ready = prepare_image(part, OPENAI_LIMITS, vision=vision)
    if isinstance(ready, str):
        return {"type": "text", "text": ready}
    url = f"data:{ready.media_type};base64,{ready.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def document_content(part: DocumentPart, vision: bool, pdf_files: bool) -> list[dict[str, Any]]:
    """A PDF as a ``file`` part (OpenAI with vision), else its text plus, for vision
    models, its pages without a text layer as images."""
    if vision and pdf_files and part.media_type == "application/pdf":
        data_url = f"data:application/pdf;base64,{part.data}"
        return [{"type": "file", "file": {"filename": "document.pdf", "file_data": data_url}}]
    content: list[dict[str, Any]] = [{"type": "text", "text": document_text(part)}]
    if vision:
        for item in pdf_page_images(part, OPENAI_LIMITS):
            if isinstance(item, str):
                content.append({"type": "text", "text": item})
            else:
                content.append(image_content(item, vision))
    return content


def assistant_message(message: AssistantMessage) -> WireMessage:
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


def wire_tool(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


# -- response mapping -----------------------------------------------------------------------


def wire_usage(usage: CompletionUsage | None) -> Usage:
    """The reported usage; a count that is not a whole number of 0 or more counts as 0
    (not reported), so :func:`estimated_usage` fills it in."""
    if usage is None:
        return Usage(requests=1)
    details = usage.prompt_tokens_details
    return Usage(
        requests=1,
        input_tokens=_tokens(usage.prompt_tokens),
        output_tokens=_tokens(usage.completion_tokens),
        cache_read_tokens=_tokens(getattr(details, "cached_tokens", 0)),
        cache_write_tokens=_tokens(getattr(details, "cache_write_tokens", 0)),
    )


def _tokens(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def estimated_usage(
    messages: Sequence[Message],
    tools: Sequence[ToolDefinition],
    response: AssistantMessage,
    counter: Counter | None = None,
) -> Usage | None:
    """The response's usage with the counts the server did not report estimated (the
    prompt from the messages and tools sent, the output from the reply); None when the
    server reported both."""
    usage = response.usage
    wrote = bool(response.text or response.tool_calls)
    if usage.input_tokens > 0 and (usage.output_tokens > 0 or not wrote):
        return None
    count = counter or estimate
    input_tokens = usage.input_tokens or (
        sum(estimate_tokens(m, counter) for m in messages) + tools_tokens(tools, counter)
    )
    output_tokens = usage.output_tokens or (
        count(response.text)
        + sum(count(c.name) + count(c.raw_args or json.dumps(c.args)) for c in response.tool_calls)
    )
    return Usage(
        requests=max(usage.requests, 1),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )


def wire_finish(reason: str | None, *, has_calls: bool) -> str | None:
    """Normalised finish reason; a server that says ``stop`` after tool calls means them."""
    if reason is None:
        return "tool_calls" if has_calls else None
    finish = _FINISH.get(reason, reason)
    return "tool_calls" if has_calls and finish == "stop" else finish


def wire_tool_call(call_id: str | None, name: str, arguments: str | None) -> ToolCallPart:
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
class PendingCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChunkAssembler:
    """Builds the final message from chunks; ``feed`` returns each text delta."""

    model_name: str
    text: list[str] = field(default_factory=list)
    calls: list[PendingCall] = field(default_factory=list)
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
            self.calls.append(PendingCall())
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
            parts.append(wire_tool_call(call.id, call.name, "".join(call.arguments)))
        return AssistantMessage(
            parts=tuple(parts),
            usage=wire_usage(self.usage),
            model_name=self.model_name,
            finish_reason=wire_finish(self.finish_reason, has_calls=bool(self.calls)),
        )


# -- errors ---------------------------------------------------------------------------------
