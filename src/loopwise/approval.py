"""Human approval before a tool call runs.

A tool made with ``requires_approval=True`` runs only after a decision for that exact call
id. The decision comes from the agent's ``approve=`` callback, or, without one, the run
stops as ``input_required`` with the call pending in ``result.state``; decide with
``state.approve(call_id)`` / ``state.reject(call_id, reason)`` and continue with
``agent.run(state)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "ApprovalCallback",
    "ApprovalNeeded",
    "ApprovalRequest",
    "Approve",
    "Decision",
    "Reject",
]


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A call waiting for a decision: the run, the call id, the tool, its arguments, and
    why it waits (the tool's rule, a capability's reason, an interrupted call)."""

    run_id: str
    call_id: str
    tool_name: str
    args: dict[str, Any]
    reason: str = "requires_approval"


@dataclass(frozen=True, slots=True)
class Approve:
    """Run the call; with ``arguments`` the call runs with these (validated) instead."""

    arguments: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """Do not run the call; the model is told it was rejected, with the reason."""

    reason: str = field(default="rejected by the user")


Decision: TypeAlias = Approve | Reject
ApprovalCallback: TypeAlias = Callable[
    [ApprovalRequest], "bool | Decision | Awaitable[bool | Decision]"
]


class ApprovalNeeded(Exception):
    """Raised by a running tool to turn its own call into a pending approval.

    The call gets no result; the run stops as ``input_required`` with it pending, and a
    decision for it is honoured on resume even if the tool does not otherwise need one
    (the durable engine raises it for a non-idempotent call cut short by a crash).
    """


def as_decision(value: bool | Decision) -> Decision:
    if isinstance(value, Approve | Reject):
        return value
    return Approve() if value else Reject()
