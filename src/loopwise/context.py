"""Context-window management with token counts kept per message.

:class:`History` keeps the conversation and an estimate of each message's tokens, counted
once when the message is added, so a step costs O(1) however long the history. Near the
window, :func:`fit` compacts: old tool results are shortened first (the last few of each
tool stay whole), then older turns are summarised by the model into one note, then, as a
last resort, dropped. A cut always falls before an assistant message, so a tool call is
never separated from its result. The task message carries at most one summary and one note
of dropped messages: each compaction folds into them rather than adding more.

Tokens are counted by the history's ``counter`` (the model's own tokenizer, see
:func:`loopwise.tokens.counter_for`) when it has one, else by the conservative
:func:`loopwise.tokens.estimate`.
"""

from __future__ import annotations

import base64
import json
import re
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
from .tokens import Counter, estimate

__all__ = [
    "ContextOverflow",
    "ContextPolicy",
    "History",
    "estimate_tokens",
    "fit",
    "output_reserve",
]

_MESSAGE_OVERHEAD = 4  # role and delimiters, beside a text estimate that errs high
_COUNTED_OVERHEAD = 6  # beside an exact count: a chat template's (ChatML: 5 tokens)
_IMAGE_TOKENS = 1600
_MIN_OUTPUT_RESERVE = 256


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


def output_reserve(window: int, max_tokens: int) -> int:
    """Output tokens to keep free in a window: ``max_tokens``, but at most a quarter of a
    small window (never less than 256), so a 4k model still has room for its input."""
    return min(max_tokens, max(window // 4, _MIN_OUTPUT_RESERVE))


def _args_tokens(part: ToolCallPart, count: Counter) -> int:
    if part.raw_args is not None:
        return count(part.raw_args)
    try:
        return count(json.dumps(part.args))
    except (RecursionError, ValueError, TypeError):  # arguments no run keeps (see run.checked)
        return _UNCOUNTABLE_ARGS


_UNCOUNTABLE_ARGS = 10_000


def _part_tokens(part: object, count: Counter) -> int:
    if isinstance(part, TextPart):
        return count(part.text)
    if isinstance(part, ToolCallPart):
        return count(part.name) + _args_tokens(part, count) + 8
    if isinstance(part, ToolResultPart):
        return count(part.content) + 8 + sum(map(_image_part_tokens, part.images))
    if isinstance(part, ImagePart):
        return _image_part_tokens(part)
    if isinstance(part, DocumentPart):
        return count(part.text) if part.text else len(part.data) // 3
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


def estimate_tokens(message: Message, counter: Counter | None = None) -> int:
    """A message's tokens: its text counted by ``counter``, else conservatively estimated."""
    count, overhead = (counter, _COUNTED_OVERHEAD) if counter else (estimate, _MESSAGE_OVERHEAD)
    if isinstance(message, SystemMessage):
        return count(message.content) + overhead
    return sum(_part_tokens(p, count) for p in message.parts) + overhead


def tools_tokens(tools: Sequence[ToolDefinition], counter: Counter | None = None) -> int:
    """The tokens of tool definitions as sent (name, description and JSON schema)."""
    count = counter or estimate
    return sum(count(t.name + t.description + json.dumps(t.parameters)) + 8 for t in tools)


@dataclass(slots=True)
class History:
    """The conversation with a running token count, each message counted once.

    ``counter`` counts a text's tokens (the model's tokenizer); without one the conservative
    estimate is used. ``scale`` calibrates counts against what the provider reports (never
    below 1.0), so the window check errs on the safe side.
    """

    messages: list[Message] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    total: int = 0
    scale: float = 1.0
    counter: Counter | None = None

    @classmethod
    def of(cls, messages: Sequence[Message], counter: Counter | None = None) -> History:
        history = cls(counter=counter)
        for m in messages:
            history.append(m)
        return history

    def use_counter(self, counter: Counter | None) -> None:
        """Count with ``counter`` from now on, recounting the messages already here."""
        if counter is self.counter:
            return
        self.counter = counter
        self.counts = [estimate_tokens(m, counter) for m in self.messages]
        self.total = sum(self.counts)

    def append(self, message: Message) -> None:
        n = estimate_tokens(message, self.counter)
        self.messages.append(message)
        self.counts.append(n)
        self.total += n

    def replace(self, index: int, message: Message) -> None:
        n = estimate_tokens(message, self.counter)
        self.total += n - self.counts[index]
        self.messages[index] = message
        self.counts[index] = n

    def splice(self, start: int, stop: int, new: Sequence[Message]) -> None:
        """Replace ``messages[start:stop]`` with ``new``."""
        counts = [estimate_tokens(m, self.counter) for m in new]
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
    """Compact ``history`` in place so that it plus the output reserve fits ``window``.

    ``reserved`` is the call's ``max_tokens``; what is kept free for the answer is
    :func:`output_reserve` of it, so a small window is not all taken by the reserve."""
    reserved = output_reserve(window, reserved)
    if history.estimated(reserved) <= window * policy.trigger:
        return []
    done: list[Compaction] = []
    goal = int(window * policy.target) - reserved
    steps: list[tuple[str, Callable[[], Awaitable[bool]]]] = [
        ("shorten_tool_results", lambda: _shorten(history, goal, policy)),
        ("summarise", lambda: _summarise(history, policy, summarise)),
        ("drop_oldest", lambda: _drop(history, policy)),
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
    """Shorten old tool results, oldest first: each result part whose tool has at least
    ``keep_tool_results`` newer results (parallel results in one message count apart)."""
    seen: dict[str, int] = {}
    plan: list[tuple[int, set[int]]] = []
    for i in range(len(history.messages) - 1, -1, -1):
        m = history.messages[i]
        if not isinstance(m, UserMessage):
            continue
        old: set[int] = set()
        for j in range(len(m.parts) - 1, -1, -1):
            p = m.parts[j]
            if isinstance(p, ToolResultPart):
                if seen.get(p.name, 0) >= policy.keep_tool_results:
                    old.add(j)
                seen[p.name] = seen.get(p.name, 0) + 1
        if old:
            plan.append((i, old))
    changed = False
    for i, old in reversed(plan):  # oldest first
        if history.estimated() <= goal:
            break
        changed |= _shorten_message(history, i, limit=policy.shortened_chars, only=old)
    return changed


def _shorten_message(
    history: History, index: int, *, limit: int, only: set[int] | None = None
) -> bool:
    """Shorten the tool results of one message (those at the indexes ``only``, else all)."""
    message = history.messages[index]
    assert isinstance(message, UserMessage)
    parts: list[UserPart] = []
    changed = False
    for j, p in enumerate(message.parts):
        if (
            isinstance(p, ToolResultPart)
            and (only is None or j in only)
            and (len(p.content) > limit + 80 or p.images)
        ):
            parts.append(_shortened(p, limit))
            changed = True
        else:
            parts.append(p)
    if changed:
        history.replace(index, UserMessage(parts=tuple(parts)))
    return changed


def _shortened(part: ToolResultPart, limit: int) -> ToolResultPart:
    content = part.content
    if len(content) > limit + 80:
        content = (
            f"{content[:limit]}\n... [shortened to save context: "
            f"{len(content) - limit} characters omitted]"
        )
    if part.images:
        content += f"\n[{len(part.images)} image(s) removed to save context]"
    return replace(part, content=content, images=())


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


# -- the notes on the task message: one summary, one count of dropped messages ------------

_SUMMARY_NOTE = re.compile(
    r"\[loopwise: summary of (\d+) earlier messages, written to save context\]\n(.*)", re.S
)
_DROP_NOTE = re.compile(r"\[loopwise: (\d+) earlier messages were removed to fit the context")


@dataclass(frozen=True, slots=True)
class _Notes:
    """The task message split into its own parts and the compaction notes on it."""

    parts: tuple[UserPart, ...]
    summarised: int = 0
    summary: str | None = None
    dropped: int = 0


def _read_notes(task: UserMessage) -> _Notes:
    notes = _Notes(parts=())
    own: list[UserPart] = []
    for i, p in enumerate(task.parts):
        text = p.text if isinstance(p, TextPart) and i > 0 else ""
        if found := _SUMMARY_NOTE.match(text):
            notes = replace(notes, summarised=int(found[1]), summary=found[2])
        elif found := _DROP_NOTE.match(text):
            notes = replace(notes, dropped=int(found[1]))
        else:
            own.append(p)
    return replace(notes, parts=tuple(own))


def _write_notes(history: History, index: int, notes: _Notes) -> None:
    """Put the task back with at most one summary note and one drop note."""
    parts = list(notes.parts)
    if notes.summary is not None:
        parts.append(
            TextPart(
                text=f"[loopwise: summary of {notes.summarised} earlier messages, written to "
                f"save context]\n{notes.summary}"
            )
        )
    if notes.dropped:
        parts.append(
            TextPart(
                text=f"[loopwise: {notes.dropped} earlier messages were removed to fit the "
                "context window]"
            )
        )
    history.replace(index, UserMessage(parts=tuple(parts)))


def _task(history: History, start: int) -> _Notes:
    task = history.messages[start - 1]
    assert isinstance(task, UserMessage)
    return _read_notes(task)


async def _summarise(history: History, policy: ContextPolicy, summarise: Summariser | None) -> bool:
    """Summarise older turns, the previous summary with them, into the one summary note."""
    span = _cut_range(history, policy)
    if summarise is None or span is None:
        return False
    start, stop = span
    notes = _task(history, start)
    earlier: list[Message] = []
    if notes.summary is not None:
        earlier.append(UserMessage.text(f"[summary of the work before]\n{notes.summary}"))
    summary = await summarise([*earlier, *history.messages[start:stop]])
    if not summary:
        return False
    history.splice(start, stop, [])
    notes = replace(notes, summary=summary, summarised=notes.summarised + stop - start)
    _write_notes(history, start - 1, notes)
    return True


async def _drop(history: History, policy: ContextPolicy) -> bool:
    """Drop older turns; the task's note counts all that were ever dropped."""
    span = _cut_range(history, policy)
    if span is None:
        return False
    start, stop = span
    notes = _task(history, start)
    history.splice(start, stop, [])
    _write_notes(history, start - 1, replace(notes, dropped=notes.dropped + stop - start))
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
