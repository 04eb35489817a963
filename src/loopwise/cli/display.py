"""The live view of a run on stderr: steps, thoughts, tool calls, observations and spend.

Plain lines only (no cursor movement), so it reads the same in a terminal, a pipe or a log.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias, assert_never

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
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCalled,
    ToolResulted,
)
from ..messages import Usage

__all__ = ["LiveDisplay", "compact_json", "shorten"]

OBSERVATION_CHARS = 200
ARGS_CHARS = 300

_ModelEvent: TypeAlias = RunStarted | ModelRequested | TextDelta | ModelResponded | ModelText
_ToolEvent: TypeAlias = ToolCalled | ToolResulted | ApprovalRequested
_RunEvent: TypeAlias = LoopDetected | ContextCompacted | BudgetWarning | OutputRetry | RunFinished


def shorten(text: str, limit: int = OBSERVATION_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def compact_json(value: Any, limit: int = ARGS_CHARS) -> str:
    """``value`` as compact one-line JSON, cut to ``limit`` characters."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return shorten(text, limit)


def _spend(usage: Usage, cost_usd: float) -> str:
    return f"tokens {usage.input_tokens:,} in / {usage.output_tokens:,} out · ${cost_usd:.4f}"


class LiveDisplay:
    """Renders each event of a run as it happens; feed it events with :meth:`handle`."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._mid_line = False  # streamed text was written without its newline yet
        self._streamed_step: int | None = None  # the step whose text came as deltas
        self._depths: dict[str, int] = {}  # child runs (agents used as tools) are indented
        self._indent = ""

    def handle(self, event: Event) -> None:
        """Show one event (a child run's, indented under its parent's tool call)."""
        if not isinstance(event, TextDelta):
            self._end_line()
        if isinstance(event, RunStarted):
            self._depths[event.run_id] = event.depth
        self._indent = "  │ " * self._depths.get(event.run_id, 0)
        match event:
            case RunStarted() | ModelRequested() | TextDelta() | ModelResponded() | ModelText():
                self._model_event(event)
            case ToolCalled() | ToolResulted() | ApprovalRequested():
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
            case _:
                assert_never(event)

    # -- helpers -----------------------------------------------------------------------

    def _line(self, text: str, style: str = "") -> None:
        self.console.print(Text(self._indent + text, style=style))

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
            case TextDelta():
                if not event.text:
                    return
                if not self._mid_line:
                    self.console.print(Text("  ", style="italic"), end="")
                self.console.print(Text(event.text, style="italic"), end="")
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
        style = "green" if event.status == "completed" else "red"
        reason = f" ({event.stop_reason})" if event.stop_reason else ""
        self._line(
            f"{event.status}{reason} · {event.steps} step{'' if event.steps == 1 else 's'} · "
            f"{_spend(event.usage, event.cost_usd)} · {event.duration:.1f}s",
            f"bold {style}",
        )
