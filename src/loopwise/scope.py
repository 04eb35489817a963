"""What a running loop lends the tools it calls so they can start runs of their own.

An agent used as a tool (:mod:`loopwise.agents`) runs its child agent inside the parent's
scope: the child holds every model call's worst case from the parent's budget, stops when
the parent is cancelled, and passes its events up to the parent's event stream. The
parent's capabilities reach the child through ``Capability.for_child`` (a durable run's
checkpoints, an approval callback, tracing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .approval import ApprovalCallback
    from .capabilities import Capability
    from .events import Event
    from .limits import BudgetTracker

__all__ = ["RunScope"]


@dataclass(frozen=True, slots=True)
class RunScope:
    """The calling run as a parent: its id and depth (0 at the top), cancel event, budget
    tracker (children spend from it), approval callback (of a team), event sink, and the
    capabilities a child inherits through ``for_child``."""

    run_id: str
    tracker: BudgetTracker
    depth: int = 0
    cancel: asyncio.Event | None = None
    approve: ApprovalCallback | None = None
    emit: Callable[[Event], None] | None = None
    capabilities: tuple[Capability, ...] = ()
