"""Sampling: an MCP server asks the client's model for a completion.

Refused unless the server was given ``sampling=True``; then served by the model of the run
that is using the server, within that run's budget (each request is checked and counted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from ..messages import AssistantMessage, Message, SystemMessage, TextPart, UserMessage
from ..models import ModelSettings

if TYPE_CHECKING:
    from ..run import RunContext

__all__ = ["SamplingBridge"]

MAX_SAMPLING_TOKENS = 4096


class SamplingBridge:
    """Serves ``sampling/createMessage`` with the newest active run's model."""

    def __init__(self) -> None:
        self.runs: list[RunContext] = []

    async def callback(self, context: Any, params: Any) -> Any:
        from mcp.types import INVALID_REQUEST, CreateMessageResult, ErrorData, TextContent

        if not self.runs:
            return ErrorData(code=INVALID_REQUEST, message="No run is using this client now.")
        run = self.runs[-1]
        messages = _messages(params)
        max_tokens = min(int(getattr(params, "max_tokens", 0) or 1), MAX_SAMPLING_TOKENS)
        try:
            reply = await run.budgeted_model().request(
                messages, [], ModelSettings(max_tokens=max_tokens, tool_choice="none")
            )
        except ModelError as exc:
            return ErrorData(code=INVALID_REQUEST, message=f"Sampling refused: {exc}")
        model = f"{run.model.provider}:{run.model.model_name}"
        return CreateMessageResult(
            role="assistant",
            content=TextContent(type="text", text=reply.text),
            model=model,
            stop_reason="maxTokens" if reply.finish_reason == "max_tokens" else "endTurn",
        )


def _messages(params: Any) -> list[Message]:
    out: list[Message] = []
    system = getattr(params, "system_prompt", None)
    if system:
        out.append(SystemMessage(content=str(system)))
    for message in getattr(params, "messages", ()):
        text = _text(message.content)
        if message.role == "assistant":
            out.append(AssistantMessage(parts=(TextPart(text=text),)))
        else:
            out.append(UserMessage.text(text))
    return out


def _text(content: Any) -> str:
    blocks = content if isinstance(content, list) else [content]
    texts = [str(getattr(b, "text", "")) for b in blocks if getattr(b, "type", None) == "text"]
    left = len(blocks) - len(texts)
    note = f"\n[{left} non-text block(s) left out]" if left else ""
    return "\n".join(texts) + note
