"""What a finished run leaves behind: a few sentences by the model, or a deterministic
summary when the model cannot write one."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    TextPart,
    ToolResultPart,
    UserMessage,
)
from ..models import Model, ModelSettings
from ..result import RunResult

__all__ = ["deterministic_summary", "model_summary"]

logger = logging.getLogger("loopwise.memory")

MAX_SUMMARY_CHARS = 1200
_PROMPT = """\
You write the long-term memory of an AI agent. From the run below, write 2 to 4 plain \
sentences a later run on a related task should know: what was asked, the outcome, the key \
facts learned (names, numbers, locations, decisions) and any artifacts produced (files, \
URLs, ids). Write only facts; do not give instructions. If nothing is worth keeping, \
write the outcome in one sentence."""


def _answer(result: RunResult[Any]) -> str:
    if result.output is None:
        return ""
    if isinstance(result.output, str):
        return result.output
    try:
        from pydantic_core import to_jsonable_python

        return json.dumps(to_jsonable_python(result.output), ensure_ascii=False)
    except (TypeError, ValueError):
        return str(result.output)


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _observations(result: RunResult[Any], per_item: int, total: int) -> list[str]:
    out: list[str] = []
    used = 0
    for m in result.messages:
        if not isinstance(m, UserMessage):
            continue
        for p in m.parts:
            if isinstance(p, ToolResultPart) and not p.is_error:
                line = f"{p.name}: {_clip(p.content, per_item)}"
                if used + len(line) > total:
                    return out
                out.append(line)
                used += len(line)
    return out


def _outcome(result: RunResult[Any]) -> str:
    why = result.stop_reason or ""
    return f"{result.status} ({why})" if why and result.status != "completed" else result.status


def deterministic_summary(task: str, result: RunResult[Any]) -> str:
    """Task, outcome, answer and the first tool observations, clipped to a few hundred
    characters: what is kept when no model summary can be had."""
    asked = _clip(task, 300)
    asked += "" if asked.endswith((".", "!", "?", "…")) else "."
    parts = [f"Task: {asked}", f"Outcome: {_outcome(result)}."]
    answer = _answer(result)
    if answer:
        parts.append(f"Answer: {_clip(answer, 400)}")
    elif result.error:
        parts.append(f"Error: {_clip(result.error, 200)}")
    facts = _observations(result, 160, 400)
    if facts:
        parts.append("Observed: " + "; ".join(facts))
    return _clip(" ".join(parts), MAX_SUMMARY_CHARS)


def _transcript(task: str, result: RunResult[Any]) -> str:
    lines = [f"Task: {_clip(task, 1000)}", f"Outcome: {_outcome(result)}"]
    for m in result.messages:
        if isinstance(m, AssistantMessage) and m.text:
            lines.append(f"Agent: {_clip(m.text, 400)}")
        for call in m.tool_calls if isinstance(m, AssistantMessage) else ():
            lines.append(f"Tool call: {call.name} {_clip(json.dumps(call.args), 200)}")
    lines.extend(f"Tool result: {o}" for o in _observations(result, 400, 3000))
    answer = _answer(result)
    if answer:
        lines.append(f"Final answer: {_clip(answer, 1000)}")
    return "\n".join(lines)


async def model_summary(model: Model, task: str, result: RunResult[Any]) -> str | None:
    """A few sentences by ``model``, or ``None`` when it fails or says nothing."""
    messages: list[Message] = [
        SystemMessage(content=_PROMPT),
        UserMessage(parts=(TextPart(text=_transcript(task, result)),)),
    ]
    try:
        reply = await model.request(messages, [], ModelSettings(max_tokens=300, tool_choice="none"))
    except Exception as exc:  # any provider failure: fall back to the deterministic one
        logger.info("memory summary by the model failed (%s); using the fallback", exc)
        return None
    text = reply.text.strip()
    if not text or reply.tool_calls:
        return None
    return _clip(text, MAX_SUMMARY_CHARS)
