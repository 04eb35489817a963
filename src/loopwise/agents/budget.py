"""One budget for a team of runs that have no parent agent: pipeline stages, a fan-out.

An agent used as a tool already spends from its parent's budget. ``TeamBudget`` is the
root for runs started by plain code: pass ``team.scope`` as ``parent=`` to
``Agent.run``/``stream`` and every model call of those runs (and of their children) holds
its worst case from the one budget first, so together they never spend more than it,
even when they run concurrently.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable

from ..approval import ApprovalCallback
from ..events import Event
from ..limits import Budget, BudgetTracker
from ..messages import Usage
from ..scope import RunScope

__all__ = ["TeamBudget"]


class TeamBudget:
    """The shared budget (tokens, USD, seconds) of runs started under ``scope``.

    ``cancel`` is passed to every run; ``emit`` receives every event of every run;
    ``approve`` decides approvals for runs whose agent has no callback of its own.
    With ``parent`` the team is itself inside another budget (and inherits the rest).
    Steps and tool calls stay limits of each run, not of the team.
    """

    def __init__(
        self,
        budget: Budget | None = None,
        *,
        run_id: str | None = None,
        cancel: asyncio.Event | None = None,
        approve: ApprovalCallback | None = None,
        emit: Callable[[Event], None] | None = None,
        parent: RunScope | None = None,
    ):
        self.tracker = BudgetTracker(
            budget=budget or Budget(),
            max_steps=sys.maxsize,
            pricer=None,
            parent=parent.tracker if parent is not None else None,
        )
        up = parent
        self.scope = RunScope(
            run_id=run_id or f"team_{uuid.uuid4().hex}",
            tracker=self.tracker,
            depth=up.depth + 1 if up is not None else 0,
            cancel=cancel or (up.cancel if up is not None else None),
            approve=approve or (up.approve if up is not None else None),
            emit=emit or (up.emit if up is not None else None),
        )

    @property
    def run_id(self) -> str:
        return self.scope.run_id

    @property
    def usage(self) -> Usage:
        """Everything the team's runs have used so far."""
        return self.tracker.usage

    @property
    def cost_usd(self) -> float:
        return self.tracker.cost_usd
