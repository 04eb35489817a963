"""Loop detection: a model repeating the same call, alternating A-B-A-B, or hitting the same error.

The detector watches each turn's tool calls and results. The first detection asks the loop
to nudge the model; a detection after the nudge stops the run (``incomplete``, ``loop``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from .messages import ToolCallPart, ToolResultPart, args_json

__all__ = ["LoopDetector", "LoopFinding", "LoopPolicy"]

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
class LoopDetector:
    policy: LoopPolicy = field(default_factory=LoopPolicy)
    _turns: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=16))
    _calls: deque[str] = field(default_factory=lambda: deque(maxlen=32))
    _errors: deque[str] = field(default_factory=lambda: deque(maxlen=16))
    _nudged: bool = False

    def observe(
        self, calls: list[ToolCallPart], results: list[ToolResultPart]
    ) -> LoopFinding | None:
        """Record one turn; return a finding when the model is looping."""
        if not self.policy.enabled or not calls:
            return None
        sigs = tuple(sorted(f"{c.name}({c.raw_args or args_json(c.args)})" for c in calls))
        self._turns.append(sigs)
        self._calls.extend(sigs)
        for r in results:
            if r.is_error:
                self._errors.append(f"{r.name}: {r.content[:300]}")
            else:
                self._errors.clear()
        found = self._repeated_turn() or self._alternation() or self._repeated_error()
        if found is None:
            return None
        kind, detail = found
        stop = self._nudged
        self._nudged = True
        # Forget the evidence so the model gets a fair chance after a nudge.
        self._turns.clear()
        self._calls.clear()
        self._errors.clear()
        return LoopFinding(kind, detail, stop)

    def _repeated_turn(self) -> tuple[Kind, str] | None:
        n = self.policy.repeats
        turns = self._turns
        if len(turns) >= n and len({turns[-i] for i in range(1, n + 1)}) == 1:
            return "repeated_call", f"{', '.join(turns[-1])} called {n} times in a row"
        recent = list(self._calls)[-self.policy.window :]
        for sig in set(recent):
            if recent.count(sig) > n:
                return "repeated_call", f"{sig} called {recent.count(sig)} times recently"
        return None

    def _alternation(self) -> tuple[Kind, str] | None:
        need = 2 * self.policy.alternations
        turns = list(self._turns)[-need:]
        if len(turns) < need or turns[0] == turns[1]:
            return None
        a, b = turns[0], turns[1]
        if all(t == (a if i % 2 == 0 else b) for i, t in enumerate(turns)):
            return "alternation", f"alternating between {', '.join(a)} and {', '.join(b)}"
        return None

    def _repeated_error(self) -> tuple[Kind, str] | None:
        n = self.policy.error_repeats
        errors = self._errors
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
