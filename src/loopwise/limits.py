"""Budgets, checked in one place before every model call.

Before each call the tracker works out the most the call may spend (the input estimate
plus ``max_tokens`` of output) and lowers ``max_tokens`` so that even the worst case stays
inside every budget. When not even ``min_output_tokens`` fit, no call is made: the run
stops as ``incomplete`` with reason ``budget``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .errors import UsageError
from .messages import Usage
from .models.pricing import Pricer

__all__ = ["Budget", "BudgetTracker", "Reservation", "Spend", "Stop"]


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

    def __post_init__(self) -> None:
        limits = {
            "max_usd": self.max_usd,
            "max_tokens": self.max_tokens,
            "max_seconds": self.max_seconds,
            "max_tool_calls": self.max_tool_calls,
        }
        for name, value in limits.items():
            if value is not None and not value >= 0:  # also refuses NaN
                raise UsageError(f"Budget {name} must be 0 or more (or None), not {value!r}.")
        if not 0 < self.warn_at <= 1:
            raise UsageError(f"Budget warn_at must be in (0, 1], not {self.warn_at!r}.")
        if self.min_output_tokens < 1:
            raise UsageError(
                f"Budget min_output_tokens must be at least 1, not {self.min_output_tokens}."
            )


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
class Spend:
    """What a run has used so far: part of its state (plain data, carried across resumes).

    ``seconds`` is the running time of earlier segments (time paused is not counted);
    ``warned`` the limits whose ``budget_warning`` was already sent.
    """

    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    steps: int = 0
    tool_calls: int = 0
    seconds: float = 0.0
    warned: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BudgetTracker:
    """Applies a :class:`Budget` to a run's :class:`Spend` and decides whether the next
    call may happen."""

    budget: Budget
    max_steps: int
    pricer: Pricer | None
    spend: Spend = field(default_factory=Spend)
    started: float = field(default_factory=time.monotonic)
    parent: BudgetTracker | None = None
    """The tracker of the run that started this one (an agent used as a tool): every call
    also holds its worst case from the parent's budget, so a team shares one budget."""
    _held: tuple[int, float] = (0, 0.0)  # what this run's call in flight holds in the parent
    _holds: tuple[int, float] = (0, 0.0)  # what children's calls in flight hold here
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def usage(self) -> Usage:
        return self.spend.usage

    @usage.setter
    def usage(self, value: Usage) -> None:
        self.spend.usage = value

    @property
    def cost_usd(self) -> float:
        return self.spend.cost_usd

    @cost_usd.setter
    def cost_usd(self, value: float) -> None:
        self.spend.cost_usd = value

    @property
    def steps(self) -> int:
        return self.spend.steps

    @steps.setter
    def steps(self, value: int) -> None:
        self.spend.steps = value

    @property
    def tool_calls(self) -> int:
        return self.spend.tool_calls

    @tool_calls.setter
    def tool_calls(self, value: int) -> None:
        self.spend.tool_calls = value

    def elapsed(self) -> float:
        """Running seconds: earlier segments' plus this one's."""
        return self.spend.seconds + time.monotonic() - self.started

    def fold_time(self) -> None:
        """Move this segment's running time into the spend (at the end of a segment)."""
        now = time.monotonic()
        self.spend.seconds += now - self.started
        self.started = now

    def remaining_seconds(self) -> float | None:
        """Seconds left: this run's, or less when a parent run has less left."""
        own = None if self.budget.max_seconds is None else self.budget.max_seconds - self.elapsed()
        above = self.parent.remaining_seconds() if self.parent is not None else None
        if above is None or (own is not None and own <= above):
            return own
        return above

    def record(self, usage: Usage) -> None:
        """Add a finished call's usage (and its price) to the totals, and the parent's."""
        cost = self.pricer.cost(usage) if self.pricer is not None else 0.0
        self.usage = self.usage + usage
        self.cost_usd += cost
        if self.parent is not None:
            held, self._held = self._held, (0, 0.0)
            self.parent.settle(held, usage, cost)

    def release(self) -> None:
        """Give back what a call that never finished (an error, a cancel) held in the parent."""
        if self.parent is not None:
            held, self._held = self._held, (0, 0.0)
            self.parent.settle(held, Usage(), 0.0)

    def hold(self, input_tokens: int, max_tokens: int, floor: int, pricer: Pricer | None) -> int:
        """Hold a child's call in this budget (and the parents'); how many output tokens it
        may use, below ``floor`` when it may not run (nothing is then held)."""
        with self._lock:
            allowed = self._room(input_tokens, max_tokens, pricer)
            if allowed >= floor and self.parent is not None:
                allowed = self.parent.hold(input_tokens, allowed, floor, pricer)
            if allowed < floor:
                return allowed
            cost = self._worst_case(pricer, input_tokens, allowed)
            self._holds = (self._holds[0] + input_tokens + allowed, self._holds[1] + cost)
            return allowed

    def settle(self, held: tuple[int, float], usage: Usage, cost: float) -> None:
        """A child's call ended: free what it held, count what it spent (up the tree)."""
        with self._lock:
            self._holds = (max(self._holds[0] - held[0], 0), max(self._holds[1] - held[1], 0.0))
            self.usage = self.usage + usage
            self.cost_usd += cost
        if self.parent is not None:
            self.parent.settle(held, usage, cost)

    @staticmethod
    def _worst_case(pricer: Pricer | None, input_tokens: int, output_tokens: int) -> float:
        if pricer is None:
            return 0.0
        return pricer.cost(Usage(input_tokens=input_tokens, output_tokens=output_tokens))

    def _room(self, input_tokens: int, upper: int, pricer: Pricer | None) -> int:
        """Output tokens a child's call may use within this budget, after what is held."""
        b = self.budget
        remaining = self.remaining_seconds()
        if remaining is not None and remaining <= 0:
            return -1
        allowed = upper
        if b.max_tokens is not None:
            used = self.usage.total_tokens + self._holds[0] + input_tokens
            allowed = min(allowed, b.max_tokens - used)
        if b.max_usd is not None:
            if pricer is None:
                return -1
            left = b.max_usd - self.cost_usd - self._holds[1]
            allowed = min(allowed, _affordable(pricer, input_tokens, allowed, left))
        return allowed

    def check_model_call(
        self, input_tokens: int, max_tokens: int, *, step: bool = True
    ) -> Reservation | Stop:
        """Reserve the next call, or say which limit stops the run.

        ``step=False`` is for a call that is not a step of the loop (the memory summary
        after the run): every budget applies to it, ``max_steps`` does not."""
        if step and self.steps >= self.max_steps:
            return Stop("max_steps", f"the run reached max_steps={self.max_steps}")
        remaining = self.remaining_seconds()
        if remaining is not None and remaining <= 0:
            return Stop("timeout", f"the run used its max_seconds={self.budget.max_seconds}")
        allowed = max_tokens
        floor = min(self.budget.min_output_tokens, max_tokens)
        if self.budget.max_tokens is not None:
            left = self.budget.max_tokens - self.usage.total_tokens - self._holds[0] - input_tokens
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
        if self.parent is not None:
            self.release()
            granted = self.parent.hold(input_tokens, allowed, floor, self.pricer)
            if granted < floor:
                return Stop(
                    "budget",
                    "the team's shared budget (of the parent run) has no room left for the "
                    f"next call of about {input_tokens} input tokens plus output",
                )
            allowed = granted
            cost = self._worst_case(self.pricer, input_tokens, allowed)
            self._held = (input_tokens + allowed, cost)
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
        left = self.budget.max_usd - self.cost_usd - self._holds[1]
        return _affordable(self.pricer, input_tokens, upper, left)

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
            if maximum and name not in self.spend.warned and used >= b.warn_at * maximum:
                self.spend.warned.append(name)
                found.append((name, used, maximum))
        return found


def _affordable(pricer: Pricer, input_tokens: int, upper: int, left: float) -> int:
    """The largest output (≤ upper) whose worst-case price fits ``left`` USD."""
    if pricer.cost(Usage(input_tokens=input_tokens, output_tokens=upper)) <= left:
        return upper
    base = pricer.cost(Usage(input_tokens=input_tokens))
    if base >= left:
        return 0
    per_token = pricer.cost(Usage(output_tokens=1_000_000)) / 1_000_000
    if per_token <= 0:
        return upper
    return min(upper, int((left - base) / per_token))
