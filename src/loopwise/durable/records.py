"""What the durable engine stores and the HTTP API shows: runs, their events, approvals.

Plain JSON-able dataclasses shared by :mod:`loopwise.durable` (which writes them) and
:mod:`loopwise.server` (which serves them). Nothing here is ever unpickled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeAlias

from ..errors import LoopwiseError

__all__ = [
    "TERMINAL",
    "Conflict",
    "Decision",
    "IdempotencyMismatch",
    "InvalidArguments",
    "NotFound",
    "PendingApproval",
    "RunRecord",
    "RunState",
    "StoredEvent",
]

RunState: TypeAlias = Literal[
    "queued", "in_progress", "input_required", "completed", "incomplete", "failed", "cancelled"
]
TERMINAL: frozenset[str] = frozenset({"completed", "incomplete", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """A tool call waiting for a human: bound to this run, this call id and these arguments."""

    call_id: str
    tool: str
    arguments: dict[str, Any]
    reason: str = "requires_approval"  # or "interrupted": a non-idempotent call cut by a crash


@dataclass(frozen=True, slots=True)
class Decision:
    """A human decision on one pending call: who made it (the API key's principal) and when."""

    call_id: str
    segment: int
    approve: bool
    principal: str | None
    reason: str | None
    decided_at: float


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the API shows it (times are Unix seconds, UTC)."""

    id: str
    agent: str
    status: RunState
    input: str
    created_at: float
    updated_at: float
    model: str | None = None
    stop_reason: str | None = None
    detail: str | None = None
    output: Any = None
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    steps: int = 0
    tool_calls: int = 0
    pending_approvals: list[PendingApproval] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    principal: str | None = None
    """Who started the run (the API key's principal); None for runs started without one."""
    decisions: list[Decision] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One typed event of a run (``data`` is ``Event.to_dict()``), numbered from 1."""

    run_id: str
    seq: int
    type: str
    data: dict[str, Any]


class NotFound(LoopwiseError):
    """No such run (or agent)."""


class Conflict(LoopwiseError):
    """The request does not fit the run's state: e.g. a decision for a call not pending."""


class InvalidArguments(LoopwiseError):
    """Edited arguments in a decision do not validate against the tool's schema."""


class IdempotencyMismatch(InvalidArguments):
    """An idempotency key came back with another request than the one it first came with."""
