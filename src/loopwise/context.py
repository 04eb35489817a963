"""Context-window management with token counts kept per message.

:class:`History` keeps the conversation and an estimate of each message's tokens, counted
once when the message is added, so a step costs O(1) however long the history. Near the
window, :func:`fit` compacts: old tool results are shortened first (the last few of each
tool stay whole), then older turns are summarised by the model into one note, then, as a
last resort, dropped. A cut always falls before an assistant message, so a tool call is
never separated from its result.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from ._imaging import BadMedia, image_info, image_tokens
from .errors import LoopwiseError
from .messages import (
    AssistantMessage,
    DocumentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    UserMessage,
    UserPart,
)

__all__ = ["ContextOverflow", "ContextPolicy", "History", "estimate_tokens", "fit"]

_CHARS_PER_TOKEN = 4
_MESSAGE_OVERHEAD = 4
_IMAGE_TOKENS = 1600


class ContextOverflow(LoopwiseError):
    """Even the task and the latest turn do not fit in the context window."""


@dataclass(frozen=True, slots=True)
class ContextPolicy:
    """``trigger``: compact when the request would fill this fraction of the window;
    ``target``: compact down to this fraction; ``keep_tool_results``: the last N results
    of each tool are never shortened; ``keep_messages``: recent messages never summarised.
    """

    trigger: float = 0.9
    target: float = 0.6
    keep_tool_results: int = 2
    keep_messages: int = 6
    shortened_chars: int = 300
    summary_tokens: int = 1024


def _text_tokens(text: str) -> int:
    return (len(text) + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN


def _part_tokens(part: object) -> int:
    if isinstance(part, TextPart):
        return _text_tokens(part.text)
    if isinstance(part, ToolCallPart):
        return _text_tokens(part.name) + _text_tokens(part.raw_args or json.dumps(part.args)) + 8
    if isinstance(part, ToolResultPart):
        return _text_tokens(part.content) + 8 + sum(map(_image_part_tokens, part.images))
    if isinstance(part, ImagePart):
        return _image_part_tokens(part)
    if isinstance(part, DocumentPart):
        return _text_tokens(part.text) if part.text else len(part.data) // 3
    return 0


def _image_part_tokens(part: ImagePart) -> int:
    """About width x height / 750 as the provider scales it; the size is read from the
    header (the first 192 KB of the data at most, never the whole image)."""
    try:
        head = base64.b64decode(part.data[:262_144], validate=False)
        info = image_info(head, max_pixels=1 << 62)
    except (BadMedia, ValueError):
        return _IMAGE_TOKENS
    return image_tokens(info.width, info.height)


def estimate_tokens(message: Message) -> int:
    """A quick estimate of a message's tokens (about four characters a token)."""
    if isinstance(message, SystemMessage):
        return _text_tokens(message.content) + _MESSAGE_OVERHEAD
    return sum(_part_tokens(p) for p in message.parts) + _MESSAGE_OVERHEAD


def tools_tokens(tools: Sequence[ToolDefinition]) -> int:
    return sum(_text_tokens(t.name + t.description + json.dumps(t.parameters)) + 8 for t in tools)


@dataclass(slots=True)
class History:
    """The conversation with a running token estimate.

    ``scale`` calibrates estimates against what the provider reports (never below 1.0),
    so the window check errs on the safe side.
    """

    messages: list[Message] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    total: int = 0
    scale: float = 1.0

    @classmethod
    def of(cls, messages: Sequence[Message]) -> History:
        history = cls()
        for m in messages:
            history.append(m)
        return history

    def append(self, message: Message) -> None:
        n = estimate_tokens(message)
        self.messages.append(message)
        self.counts.append(n)
        self.total += n

    def replace(self, index: int, message: Message) -> None:
        n = estimate_tokens(message)
        self.total += n - self.counts[index]
        self.messages[index] = message
        self.counts[index] = n

    def splice(self, start: int, stop: int, new: Sequence[Message]) -> None:
        """Replace ``messages[start:stop]`` with ``new``."""
        counts = [estimate_tokens(m) for m in new]
        self.total += sum(counts) - sum(self.counts[start:stop])
        self.messages[start:stop] = list(new)
        self.counts[start:stop] = counts

    def estimated(self, extra: int = 0) -> int:
        return int((self.total + extra) * self.scale)

    def calibrate(self, estimated_input: int, reported_input: int) -> None:
        """Learn from the provider's count of the tokens we estimated."""
        if estimated_input > 0 and reported_input > 0:
            ratio = reported_input / estimated_input
            self.scale = max(1.0, 0.5 * self.scale + 0.5 * ratio, ratio)


@dataclass(frozen=True, slots=True)
class Compaction:
    strategy: str
    tokens_before: int
    tokens_after: int


Summariser = Callable[[list[Message]], Awaitable[str | None]]


async def fit(
    history: History,
    *,
    window: int,
    reserved: int,
    policy: ContextPolicy,
    summarise: Summariser | None,
) -> list[Compaction]:
    """Compact ``history`` in place so that it plus ``reserved`` tokens fits ``window``."""
    if history.estimated(reserved) <= window * policy.trigger:
        return []
    done: list[Compaction] = []
    goal = int(window * policy.target) - reserved
    steps: list[tuple[str, Callable[[], Awaitable[bool]]]] = [
        ("shorten_tool_results", lambda: _shorten(history, goal, policy)),
        ("summarise", lambda: _summarise(history, goal, policy, summarise)),
        ("drop_oldest", lambda: _drop(history, goal, policy)),
    ]
    for strategy, run in steps:
        before = history.estimated()
        if await run():
            done.append(Compaction(strategy, before, history.estimated()))
        if history.estimated() <= goal:
            return done
    if history.estimated(reserved) > window:
        _squeeze_tail(history, window - reserved)
    if history.estimated(reserved) > window:
        raise ContextOverflow(
            f"The task and latest turn need about {history.estimated()} tokens, more than "
            f"the context window of {window} minus {reserved} reserved for the answer; "
            "use a model with a larger window or smaller tool outputs (max_output_chars)."
        )
    return done


async def _shorten(history: History, goal: int, policy: ContextPolicy) -> bool:
    seen: dict[str, int] = {}
    plan: list[int] = []
    for i in range(len(history.messages) - 1, -1, -1):
        m = history.messages[i]
        if not isinstance(m, UserMessage):
            continue
        names = [p.name for p in m.parts if isinstance(p, ToolResultPart)]
        if any(seen.get(n, 0) >= policy.keep_tool_results for n in names):
            plan.append(i)
        for n in names:
            seen[n] = seen.get(n, 0) + 1
    changed = False
    for i in reversed(plan):  # oldest first
        if history.estimated() <= goal:
            break
        changed |= _shorten_message(history, i, limit=policy.shortened_chars)
    return changed


def _shorten_message(history: History, index: int, *, limit: int) -> bool:
    message = history.messages[index]
    assert isinstance(message, UserMessage)
    parts: list[UserPart] = []
    changed = False
    for p in message.parts:
        if isinstance(p, ToolResultPart) and (len(p.content) > limit + 80 or p.images):
            content = p.content
            if len(content) > limit + 80:
                content = (
                    f"{content[:limit]}\n... [shortened to save context: "
                    f"{len(content) - limit} characters omitted]"
                )
            if p.images:
                content += f"\n[{len(p.images)} image(s) removed to save context]"
            parts.append(replace(p, content=content, images=()))
            changed = True
        else:
            parts.append(p)
    if changed:
        history.replace(index, UserMessage(parts=tuple(parts)))
    return changed


def _cut_range(history: History, policy: ContextPolicy) -> tuple[int, int] | None:
    """The span of older turns that may be removed: after the task, before a kept tail
    that starts with an assistant message (so no call is parted from its result)."""
    msgs = history.messages
    first_user = next((i for i, m in enumerate(msgs) if isinstance(m, UserMessage)), None)
    if first_user is None:
        return None
    start = first_user + 1
    stop = max(start, len(msgs) - policy.keep_messages)
    while stop > start and not isinstance(msgs[stop], AssistantMessage):
        stop -= 1
    if stop <= start:
        # Keep less: the newest assistant message that still leaves something to cut.
        stop = len(msgs) - 1
        while stop > start and not isinstance(msgs[stop], AssistantMessage):
            stop -= 1
    return (start, stop) if stop > start else None


def _add_note(history: History, index: int, note: str) -> None:
    task = history.messages[index]
    assert isinstance(task, UserMessage)
    history.replace(index, UserMessage(parts=(*task.parts, TextPart(text=note))))


async def _summarise(
    history: History, goal: int, policy: ContextPolicy, summarise: Summariser | None
) -> bool:
    span = _cut_range(history, policy)
    if summarise is None or span is None:
        return False
    start, stop = span
    summary = await summarise(history.messages[start:stop])
    if not summary:
        return False
    history.splice(start, stop, [])
    _add_note(
        history,
        start - 1,
        f"[loopwise: summary of {stop - start} earlier messages, written to save context]\n"
        f"{summary}",
    )
    return True


async def _drop(history: History, goal: int, policy: ContextPolicy) -> bool:
    span = _cut_range(history, policy)
    if span is None:
        return False
    start, stop = span
    history.splice(start, stop, [])
    _add_note(
        history,
        start - 1,
        f"[loopwise: {stop - start} earlier messages were removed to fit the context window]",
    )
    return True


def _squeeze_tail(history: History, budget: int) -> None:
    """Last resort: shorten every tool result still in the history."""
    for i, m in enumerate(history.messages):
        if history.estimated() <= budget:
            return
        if isinstance(m, UserMessage):
            _shorten_message(history, i, limit=1000)


def transcript(messages: Sequence[Message], max_chars: int) -> str:
    """Plain text of messages for the summariser, bounded to ``max_chars`` (newest kept)."""
    lines: list[str] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            continue
        for p in m.parts:
            if isinstance(p, TextPart) and p.text:
                lines.append(f"{m.role}: {p.text}")
            elif isinstance(p, ToolCallPart):
                lines.append(f"tool call {p.name}({p.raw_args or json.dumps(p.args)})")
            elif isinstance(p, ToolResultPart):
                lines.append(f"result of {p.name}: {p.content}")
    text = "\n".join(lines)
    return text if len(text) <= max_chars else "..." + text[-max_chars:]
