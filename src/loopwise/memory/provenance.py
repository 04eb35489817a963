"""Where a memory's text came from, and so whether it is trusted: by provenance, never by
what the text says.

A memory's ``provenance`` lists the source kinds its text may derive from, writer first:
``user`` (stored by the application, the user API or the CLI) or ``agent`` (the run's
summary, the ``remember`` tool), then the untrusted content the run had seen when it wrote
it: ``tool:<name>`` (output of a tool not declared ``trusted``), ``recalled`` (an untrusted
memory recalled into the run), ``input:document`` / ``input:image`` (given with the task),
``unknown`` (the writer could not tell what the run had seen) and ``flag:instructions``
(agent-written text that reads like instructions: an extra signal that only adds
distrust). A memory is untrusted when any entry is other than ``user`` or ``agent``.

What a run saw comes from the core (``RunState.untrusted``, ``ToolContext.tainted``): the
memory never decides it from the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..messages import DocumentPart, ImagePart, Message, ToolResultPart, UserMessage

__all__ = [
    "AGENT",
    "FLAG_INSTRUCTIONS",
    "RECALLED",
    "TRUSTED_KINDS",
    "UNKNOWN",
    "USER",
    "clean_provenance",
    "input_sources",
    "is_untrusted",
    "legacy_provenance",
    "run_sources",
    "seen_before",
    "tool_result_sources",
    "tool_source",
]

USER = "user"
AGENT = "agent"
RECALLED = "recalled"
UNKNOWN = "unknown"
FLAG_INSTRUCTIONS = "flag:instructions"
TRUSTED_KINDS = frozenset({USER, AGENT})
"""The only entries a trusted memory may have: who wrote it, from trusted input only."""

MAX_ENTRIES = 32
MAX_ENTRY_CHARS = 80
_ENTRY = re.compile(r"[a-z]+(:[A-Za-z0-9_.\-]+)?")


def tool_source(name: str) -> str:
    """``tool:<name>``, the name reduced to letters, digits, ``_ . -`` and 64 characters."""
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:64] or "_"
    return f"tool:{safe}"


def clean_provenance(values: Iterable[Any]) -> tuple[str, ...]:
    """Provenance as stored: strings of a known shape, in order, without repeats. Anything
    else, or nothing at all, becomes ``unknown`` (so malformed provenance is never trusted)."""
    out: list[str] = []
    for v in values:
        entry = v if isinstance(v, str) and len(v) <= MAX_ENTRY_CHARS else None
        if entry is None or not _ENTRY.fullmatch(entry):
            entry = UNKNOWN
        if entry not in out:
            out.append(entry)
    if not out:
        return (UNKNOWN,)
    if len(out) > MAX_ENTRIES:  # keep the writer and the distrust, drop the detail
        out = [*out[: MAX_ENTRIES - 1], UNKNOWN] if UNKNOWN not in out else out[:MAX_ENTRIES]
    return tuple(out)


def is_untrusted(provenance: Sequence[str]) -> bool:
    """True unless every entry is a trusted writer (``user``, ``agent``)."""
    return not provenance or any(p not in TRUSTED_KINDS for p in provenance)


def legacy_provenance(source: str, untrusted: bool) -> tuple[str, ...]:
    """Provenance for a row stored before provenance existed: only a user's unflagged
    memory stays trusted; the rest was judged by its wording, so it is ``unknown``."""
    if source == USER:
        return (USER, UNKNOWN) if untrusted else (USER,)
    return (AGENT, UNKNOWN)


def _kind(source: str) -> str:
    """A core taint source (``tool:<name>:<call id>``, ``memory:<id>``, ...) as a kind."""
    head, _, rest = source.partition(":")
    if head == "memory":
        return RECALLED
    if head == "tool":
        return tool_source(rest.rpartition(":")[0] or rest)
    found = re.match(r"[a-z]+(:[A-Za-z0-9_.\-]+)?", f"{head}:{rest.partition(':')[0]}")
    return found[0] if found and found[0] not in TRUSTED_KINDS else UNKNOWN


def run_sources(untrusted: Iterable[str]) -> set[str]:
    """The kinds of the untrusted sources a run recorded (``RunState.untrusted``)."""
    return {_kind(s) if isinstance(s, str) else UNKNOWN for s in untrusted}


def seen_before(ctx: Any) -> tuple[str, ...]:
    """What a tool call's run had seen before the model made the call: the kinds of
    ``ctx.untrusted`` when the core gives them, else ``unknown`` when ``ctx.tainted``;
    ``unknown`` too for a context no run made (nothing says what came before)."""
    sources = getattr(ctx, "untrusted", None)
    if isinstance(sources, list | tuple):
        return tuple(sorted(run_sources(sources)))
    if getattr(ctx, "run", None) is None:
        return (UNKNOWN,)
    return (UNKNOWN,) if getattr(ctx, "tainted", True) is not False else ()


def input_sources(messages: Sequence[Message]) -> set[str]:
    """Documents and images given as input (not inside a tool result): their text is
    someone else's."""
    found: set[str] = set()
    for m in messages:
        if isinstance(m, UserMessage):
            for p in m.parts:
                if isinstance(p, DocumentPart):
                    found.add("input:document")
                elif isinstance(p, ImagePart):
                    found.add("input:image")
    return found


def tool_result_sources(messages: Sequence[Message]) -> set[str]:
    """Every tool that has a result in ``messages``: what a run without a record of its
    trusted tools must assume."""
    return {
        tool_source(p.name)
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    }
