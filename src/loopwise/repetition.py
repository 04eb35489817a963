"""Loop detection: a model repeating the same call, alternating A-B-A-B, or hitting the same error.

The detector watches each turn's tool calls and results. The first detection asks the loop
to nudge the model; a detection after the nudge stops the run (``incomplete``, ``loop``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from .messages import ToolCallPart, ToolResultPart, args_json

__all__ = ["LoopDetector", "LoopFinding", "LoopMemory", "LoopPolicy"]

Kind = Literal["repeated_call", "alternation", "repeated_error"]


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    """Thresholds: ``repeats`` identical turns in a row (or the same call ``repeats + 1``
    times among the last ``window`` calls), ``alternations`` A-B cycles, the same error
    ``error_repeats`` times. ``enabled=False`` turns detection off.
    """

    enabled: bool = True
    repeats: int = 3
    window: int = 10
    alternations: int = 2
    error_repeats: int = 3


@dataclass(frozen=True, slots=True)
class LoopFinding:
    kind: Kind
    detail: str
    stop: bool


@dataclass(slots=True)
class LoopMemory:
    """What the detector remembers of recent turns: part of a run's state, plain JSON."""

    turns: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=16))
    calls: deque[str] = field(default_factory=lambda: deque(maxlen=32))
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=16))
    nudged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "turns": [list(t) for t in self.turns],
            "calls": list(self.calls),
            "errors": list(self.errors),
            "nudged": self.nudged,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopMemory:
        memory = cls(nudged=bool(data.get("nudged", False)))
        memory.turns.extend(tuple(str(s) for s in t) for t in data.get("turns", ()))
        memory.calls.extend(str(c) for c in data.get("calls", ()))
        memory.errors.extend(str(e) for e in data.get("errors", ()))
        return memory


@dataclass(slots=True)
class LoopDetector:
    """Applies a :class:`LoopPolicy` to a run's :class:`LoopMemory`."""

    policy: LoopPolicy = field(default_factory=LoopPolicy)
    memory: LoopMemory = field(default_factory=LoopMemory)

    def observe(
        self, calls: list[ToolCallPart], results: list[ToolResultPart]
    ) -> LoopFinding | None:
        """Record one turn; return a finding when the model is looping."""
        if not self.policy.enabled or not calls:
            return None
        m = self.memory
        sigs = tuple(sorted(f"{c.name}({c.raw_args or args_json(c.args)})" for c in calls))
        m.turns.append(sigs)
        m.calls.extend(sigs)
        for r in results:
            if r.is_error:
                m.errors.append(f"{r.name}: {r.content[:300]}")
            else:
                m.errors.clear()
        found = self._repeated_turn() or self._alternation() or self._repeated_error()
        if found is None:
            return None
        kind, detail = found
        stop = m.nudged
        m.nudged = True
        # Forget the evidence so the model gets a fair chance after a nudge.
        m.turns.clear()
        m.calls.clear()
        m.errors.clear()
        return LoopFinding(kind, detail, stop)

    def _repeated_turn(self) -> tuple[Kind, str] | None:
        n = self.policy.repeats
        turns = self.memory.turns
        if len(turns) >= n and len({turns[-i] for i in range(1, n + 1)}) == 1:
            return "repeated_call", f"{', '.join(turns[-1])} called {n} times in a row"
        recent = list(self.memory.calls)[-self.policy.window :]
        for sig in set(recent):
            if recent.count(sig) > n:
                return "repeated_call", f"{sig} called {recent.count(sig)} times recently"
        return None

    def _alternation(self) -> tuple[Kind, str] | None:
        need = 2 * self.policy.alternations
        turns = list(self.memory.turns)[-need:]
        if len(turns) < need or turns[0] == turns[1]:
            return None
        a, b = turns[0], turns[1]
        if all(t == (a if i % 2 == 0 else b) for i, t in enumerate(turns)):
            return "alternation", f"alternating between {', '.join(a)} and {', '.join(b)}"
        return None

    def _repeated_error(self) -> tuple[Kind, str] | None:
        n = self.policy.error_repeats
        errors = self.memory.errors
        if len(errors) >= n and len({errors[-i] for i in range(1, n + 1)}) == 1:
            return "repeated_error", f"the same error {n} times: {errors[-1][:200]}"
        return None

    @staticmethod
    def nudge(finding: LoopFinding) -> str:
        """The note sent to the model after a first detection."""
        return (
            f"[loopwise] You are repeating yourself ({finding.detail}). Repeating it will give "
            "the same result. Use what you already know, try a different approach or other "
            "arguments, or give your final answer now. If you continue to repeat, the run "
            "will be stopped."
        )
