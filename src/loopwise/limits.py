"""Budgets, checked in one place before every model call.

Before each call the tracker works out the most the call may spend (the input estimate
plus ``max_tokens`` of output) and lowers ``max_tokens`` so that even the worst case stays
inside every budget. When not even ``min_output_tokens`` fit, no call is made: the run
stops as ``incomplete`` with reason ``budget``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .messages import Usage
from .models.pricing import Pricer

__all__ = ["Budget", "BudgetTracker", "Reservation", "Stop"]


@dataclass(frozen=True, slots=True)
class Budget:
    """Hard limits for one run (``None`` = no limit).

    ``max_tokens`` counts input and output tokens of all model calls together.
    ``warn_at`` is the fraction of a limit at which a ``budget_warning`` event is sent.
    ``min_output_tokens`` is the smallest output a call may be allowed; below it the run
    stops instead of making a call that could only be cut short.
    """

    max_usd: float | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None
    max_tool_calls: int | None = None
    warn_at: float = 0.8
    min_output_tokens: int = 64


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a limit stops the run: ``reason`` is the run's stop_reason, ``detail`` says more."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """What the next call may spend."""

    max_tokens: int


@dataclass(slots=True)
class BudgetTracker:
    """Keeps the spend of one run and decides whether the next call may happen."""

    budget: Budget
    max_steps: int
    pricer: Pricer | None
    started: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    steps: int = 0
    tool_calls: int = 0
    _warned: set[str] = field(default_factory=set)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining_seconds(self) -> float | None:
        if self.budget.max_seconds is None:
            return None
        return self.budget.max_seconds - self.elapsed()

    def record(self, usage: Usage) -> None:
        """Add a finished call's usage (and its price) to the totals."""
        self.usage = self.usage + usage
        if self.pricer is not None:
            self.cost_usd += self.pricer.cost(usage)

    def check_model_call(self, input_tokens: int, max_tokens: int) -> Reservation | Stop:
        """Reserve the next call, or say which limit stops the run."""
        if self.steps >= self.max_steps:
            return Stop("max_steps", f"the run reached max_steps={self.max_steps}")
        remaining = self.remaining_seconds()
        if remaining is not None and remaining <= 0:
            return Stop("timeout", f"the run used its max_seconds={self.budget.max_seconds}")
        allowed = max_tokens
        floor = min(self.budget.min_output_tokens, max_tokens)
        if self.budget.max_tokens is not None:
            left = self.budget.max_tokens - self.usage.total_tokens - input_tokens
            if left < floor:
                return Stop(
                    "budget",
                    f"max_tokens={self.budget.max_tokens}: {self.usage.total_tokens} used, "
                    f"the next call needs about {input_tokens} input tokens plus output",
                )
            allowed = min(allowed, left)
        if self.budget.max_usd is not None and self.pricer is not None:
            allowed_usd = self._output_tokens_affordable(input_tokens, allowed)
            if allowed_usd < floor:
                return Stop(
                    "budget",
                    f"max_usd={self.budget.max_usd}: ${self.cost_usd:.4f} spent, the next call "
                    "could cost more than what is left",
                )
            allowed = min(allowed, allowed_usd)
        return Reservation(max_tokens=allowed)

    def check_tool_calls(self, count: int) -> Stop | None:
        """Refuse a batch of tool calls that would go past ``max_tool_calls``."""
        limit = self.budget.max_tool_calls
        if limit is not None and self.tool_calls + count > limit:
            return Stop(
                "budget",
                f"max_tool_calls={limit}: {self.tool_calls} made, {count} more requested",
            )
        return None

    def _output_tokens_affordable(self, input_tokens: int, upper: int) -> int:
        """The largest output (≤ upper) whose worst-case price fits the USD left."""
        assert self.pricer is not None and self.budget.max_usd is not None
        left = self.budget.max_usd - self.cost_usd
        if self.pricer.cost(Usage(input_tokens=input_tokens, output_tokens=upper)) <= left:
            return upper
        base = self.pricer.cost(Usage(input_tokens=input_tokens))
        if base >= left:
            return 0
        per_token = self.pricer.cost(Usage(output_tokens=1_000_000)) / 1_000_000
        if per_token <= 0:
            return upper
        return min(upper, int((left - base) / per_token))

    def warnings(self) -> list[tuple[str, float, float]]:
        """Limits newly past their warning fraction: (limit, used, maximum), each once."""
        found: list[tuple[str, float, float]] = []
        b = self.budget
        checks: list[tuple[str, float, float | None]] = [
            ("max_usd", self.cost_usd, b.max_usd),
            ("max_tokens", self.usage.total_tokens, b.max_tokens),
            ("max_seconds", self.elapsed(), b.max_seconds),
            ("max_tool_calls", self.tool_calls, b.max_tool_calls),
            ("max_steps", self.steps, self.max_steps),
        ]
        for name, used, maximum in checks:
            if maximum and name not in self._warned and used >= b.warn_at * maximum:
                self._warned.add(name)
                found.append((name, used, maximum))
        return found
