"""What a running loop lends the tools it calls so they can start runs of their own.

An agent used as a tool (:mod:`loopwise.agents`) runs its child agent inside the parent's
scope: the child holds every model call's worst case from the parent's budget, stops when
the parent is cancelled, and passes its events up to the parent's event stream. In a durable
run the scope also carries ``checkpoints``, through which a child's model and tool calls are
checkpointed (a child cut short by a crash replays its finished calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .agent import Agent
    from .approval import ApprovalCallback
    from .events import Event
    from .limits import BudgetTracker

__all__ = ["ChildCheckpoints", "RunScope"]


class ChildCheckpoints(Protocol):
    """Where a durable run keeps its child runs' calls (see :mod:`loopwise.durable`)."""

    def child(self, agent: Agent[Any, Any], run_id: str) -> Agent[Any, Any]:
        """``agent`` for the child run ``run_id``, its model and tool calls checkpointed."""
        ...


@dataclass(frozen=True, slots=True)
class RunScope:
    """The calling run as a parent: its id and depth (0 at the top), cancel event, budget
    tracker (children spend from it), approval callback, event sink and, in a durable run,
    the checkpoints its children's calls go through (inherited by their own children)."""

    run_id: str
    tracker: BudgetTracker
    depth: int = 0
    cancel: asyncio.Event | None = None
    approve: ApprovalCallback | None = None
    emit: Callable[[Event], None] | None = None
    checkpoints: ChildCheckpoints | None = None
