"""The live view of a run on stderr: steps, thoughts, tool calls, observations and spend.

Plain lines only (no cursor movement), so it reads the same in a terminal, a pipe or a log.
Text from a model or a tool never reaches the terminal raw: control characters (C0 but
newline and tab, DEL, C1, so every escape sequence) and bidirectional overrides are shown
escaped (``\x1b``, ``\u202e``), and it is printed as plain text, never as rich markup.
:func:`install_safe_streams` puts the same guard on ``sys.stdout``/``sys.stderr`` for
everything else the ``loopwise`` command prints.
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
import time
from typing import Any, TextIO, TypeAlias, assert_never

from rich.console import Console
from rich.text import Text

from ..events import (
    ApprovalRequested,
    BudgetWarning,
    ContextCompacted,
    Event,
    LoopDetected,
    MemoryRecalled,
    ModelRequested,
    ModelResponded,
    ModelText,
    OutputRetry,
    PolicyDecision,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCalled,
    ToolProgress,
    ToolResulted,
)
from ..messages import Usage

__all__ = [
    "LiveDisplay",
    "SafeStream",
    "compact_json",
    "install_safe_streams",
    "json_safe",
    "print_answer",
    "printable",
    "shorten",
]

OBSERVATION_CHARS = 200
ARGS_CHARS = 300

_UNSAFE = [
    *range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0),  # C0, DEL, C1
    0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),  # bidi
    0x2028, 0x2029,  # line and paragraph separators
]  # fmt: skip
_SHOWN = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _UNSAFE}
_JSON_SHOWN = {c: f"\\u{c:04x}" for c in _UNSAFE}
_SGR = re.compile(r"(\x1b\[[0-9;]{0,32}m)")
"""A colour or style sequence, the only one a terminal stream lets through (rich's own)."""


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters and bidi overrides escaped
    visibly (ESC becomes ``\\x1b``); newlines and tabs are kept."""
    return text.translate(_SHOWN)


def json_safe(text: str) -> str:
    """JSON text safe for a terminal: the characters :func:`printable` escapes become
    ``\\u`` escapes, so the JSON still parses to the same value."""
    return text.translate(_JSON_SHOWN)


class SafeStream(io.TextIOBase):
    """A text stream that escapes control characters before they reach ``raw``.

    On a terminal, colour and style sequences (``ESC [ ... m``) pass, so rich can still
    style its own output; everything else (cursor movement, clear screen, titles, OSC 52
    clipboard writes, links, C1, bidi overrides) is escaped. Off a terminal nothing passes.
    """

    def __init__(self, raw: TextIO):
        super().__init__()
        self.raw = raw

    def write(self, text: str) -> int:
        if self.raw.isatty():
            parts = _SGR.split(text)
            safe = "".join(p if i % 2 else json_safe(p) for i, p in enumerate(parts))
        else:
            safe = json_safe(text)
        self.raw.write(safe)
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.raw, "errors", None)


def print_answer(text: str) -> None:
    """The final answer on stdout: Markdown on a terminal (no links, no markup, control
    characters escaped), the plain text when piped."""
    if not sys.stdout.isatty():
        print(printable(text), flush=True)
        return
    from rich.markdown import Markdown

    console = Console(highlight=False)
    console.print(Markdown(printable(text), hyperlinks=False))


def install_safe_streams() -> None:
    """Put :class:`SafeStream` on ``sys.stdout`` and ``sys.stderr`` (once)."""
    if not isinstance(sys.stdout, SafeStream):
        sys.stdout = SafeStream(sys.stdout)
    if not isinstance(sys.stderr, SafeStream):
        sys.stderr = SafeStream(sys.stderr)


_ModelEvent: TypeAlias = RunStarted | ModelRequested | TextDelta | ModelResponded | ModelText
_ToolEvent: TypeAlias = ToolCalled | ToolResulted | ApprovalRequested | PolicyDecision
_RunEvent: TypeAlias = LoopDetected | ContextCompacted | BudgetWarning | OutputRetry | RunFinished


def shorten(text: str, limit: int = OBSERVATION_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def compact_json(value: Any, limit: int = ARGS_CHARS) -> str:
    """``value`` as compact one-line JSON, cut to ``limit`` characters."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return shorten(text, limit)


def _spend(usage: Usage, cost_usd: float, label: str = "tokens so far") -> str:
    """Running totals; the cost only when there is one (a free model shows none)."""
    cost = f" · ${cost_usd:.4f}" if cost_usd > 0 else ""
    return f"{label} {usage.input_tokens:,} in / {usage.output_tokens:,} out{cost}"


class Spinner:
    """A one-line spinner with the elapsed time while the model thinks (terminals only).

    It writes only its own text and cursor codes to the raw stream, from a thread, and
    clears its line when stopped; nothing from a model or a tool goes through it.
    """

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    DELAY = 0.3
    """Seconds before the first frame: a quick reply shows no spinner at all."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._drawn = False

    def start(self, label: str) -> None:
        self.stop()
        stop = threading.Event()
        started = time.monotonic()

        def spin() -> None:
            frame = 0
            if stop.wait(self.DELAY):
                return
            while not stop.wait(0.1):
                self._drawn = True
                elapsed = time.monotonic() - started
                text = f"\r\x1b[2K{self.FRAMES[frame % len(self.FRAMES)]} {label} {elapsed:.1f}s"
                self.stream.write(text)
                self.stream.flush()
                frame += 1

        self._stop, self._thread = stop, threading.Thread(target=spin, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stop is None or self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._stop = self._thread = None
        if self._drawn:
            self._drawn = False
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


class LiveDisplay:
    """Renders each event of a run as it happens; feed it events with :meth:`handle`."""

    def __init__(self, console: Console | None = None, *, spinner: bool | None = None):
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        if spinner is None:
            spinner = console is None and sys.stderr.isatty()
        raw = getattr(sys.stderr, "raw", sys.stderr)  # past SafeStream: only our own codes
        self.spinner = Spinner(raw) if spinner else None
        self._mid_line = False  # streamed text was written without its newline yet
        self._streamed_step: int | None = None  # the step whose text came as deltas
        self._depths: dict[str, int] = {}  # child runs (agents used as tools) are indented
        self._indent = ""

    def handle(self, event: Event) -> None:
        """Show one event (a child run's, indented under its parent's tool call)."""
        if self.spinner is not None:
            self.spinner.stop()
        if not isinstance(event, TextDelta):
            self._end_line()
        if isinstance(event, RunStarted):
            self._depths[event.run_id] = event.depth
        self._indent = "  │ " * self._depths.get(event.run_id, 0)
        match event:
            case RunStarted() | ModelRequested() | TextDelta() | ModelResponded() | ModelText():
                self._model_event(event)
            case ToolCalled() | ToolResulted() | ApprovalRequested() | PolicyDecision():
                self._tool_event(event)
            case LoopDetected() | ContextCompacted() | BudgetWarning() | OutputRetry():
                self._run_event(event)
            case MemoryRecalled():
                if event.ids:
                    flagged = f", {event.untrusted} untrusted" if event.untrusted else ""
                    self._line(
                        f"  memory: {len(event.ids)} recalled ({', '.join(event.ids)}{flagged})",
                        "dim",
                    )
            case RunFinished():
                self._run_event(event)
            case ToolProgress():
                total = f"/{event.total:g}" if event.total is not None else ""
                note = f" {shorten(event.message)}" if event.message else ""
                self._line(f"  … {event.name} {event.progress:g}{total}{note}", "dim")
            case _:
                assert_never(event)

    def close(self) -> None:
        """Stop the spinner (the run ended, or an error or interrupt cut it short)."""
        if self.spinner is not None:
            self.spinner.stop()

    # -- helpers -----------------------------------------------------------------------

    def _line(self, text: str, style: str = "") -> None:
        self.console.print(Text(self._indent + printable(text), style=style))

    def _end_line(self) -> None:
        if self._mid_line:
            self.console.print()
            self._mid_line = False

    def _model_event(self, event: _ModelEvent) -> None:
        match event:
            case RunStarted():
                name = f"{event.agent} · " if event.agent else ""
                parent = f" · child of {event.parent_run_id}" if event.parent_run_id else ""
                self._line(f"run {event.run_id} · {name}{event.model}{parent}", "dim")
            case ModelRequested():
                self._line(f"step {event.step}", "bold cyan")
                if self.spinner is not None:
                    self.spinner.start(f"{self._indent}thinking")
            case TextDelta():
                if not event.text:
                    return
                if not self._mid_line:
                    self.console.print(Text("  ", style="italic"), end="")
                self.console.print(Text(printable(event.text), style="italic"), end="")
                self._mid_line = True
                self._streamed_step = event.step
            case ModelResponded():
                self._line(f"  {_spend(event.total_usage, event.total_cost_usd)}", "dim")
            case ModelText():
                self._model_text(event)
            case _:
                assert_never(event)

    def _model_text(self, event: ModelText) -> None:
        if self._streamed_step == event.step or event.final:
            return  # already shown as it streamed; a final answer goes to stdout
        self._line(f"  {event.text.strip()}", "italic")

    def _tool_event(self, event: _ToolEvent) -> None:
        match event:
            case ToolCalled():
                self._line(f"  → {event.name}({compact_json(event.args)})", "bold")
            case ToolResulted():
                if event.is_error:
                    content = event.content.removeprefix("ERROR:").strip()
                    self._line(f"  ← {event.name} error: {shorten(content)}", "red")
                else:
                    n = event.images
                    pictures = f" [{n} image{'s' if n > 1 else ''}]" if n else ""
                    self._line(f"  ← {event.name} result: {shorten(event.content)}{pictures}")
            case ApprovalRequested():
                self._line(
                    f"  ? approval needed for {event.name}({compact_json(event.args)}) "
                    f"[call {event.call_id}]",
                    "bold yellow",
                )
            case PolicyDecision():
                after = f" (untrusted input: {', '.join(event.taint)})" if event.taint else ""
                self._line(
                    f"  policy {event.action} {event.name} [{event.rule}]: "
                    f"{shorten(event.reason)}{after}",
                    {"deny": "red", "ask": "yellow"}.get(event.action, "dim"),
                )
            case _:
                assert_never(event)

    def _run_event(self, event: _RunEvent) -> None:
        match event:
            case LoopDetected():
                self._line(
                    f"  ! loop detected ({event.kind}, {event.action}): {event.detail}", "yellow"
                )
            case ContextCompacted():
                self._line(
                    f"  context compacted ({event.strategy}): {event.tokens_before:,} → "
                    f"{event.tokens_after:,} tokens",
                    "dim",
                )
            case BudgetWarning():
                self._line(
                    f"  ! budget warning: {event.limit} at {event.used:g} of {event.maximum:g}",
                    "yellow",
                )
            case OutputRetry():
                self._line(
                    f"  ! answer rejected (attempt {event.attempt}): {shorten(event.error)}",
                    "yellow",
                )
            case RunFinished():
                self._finished(event)
            case _:
                assert_never(event)

    def _finished(self, event: RunFinished) -> None:
        """The run's last line; why it stopped is said once, by the command, after it
        (a child run, which has no such line, says it here)."""
        style = "green" if event.status == "completed" else "red"
        child = event.parent_run_id is not None
        reason = f" ({event.stop_reason})" if event.stop_reason and child else ""
        self._line(
            f"{event.status}{reason} · {event.steps} step{'' if event.steps == 1 else 's'} · "
            f"{_spend(event.usage, event.cost_usd, 'total')} · {event.duration:.1f}s",
            f"bold {style}",
        )
