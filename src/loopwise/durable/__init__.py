"""Durable runs: a run is a DBOS workflow whose model and tool calls are checkpointed steps.

Needs the ``durable`` extra (``pip install 'loopwise[durable]'``). Runs survive crashes
(``kill -9`` included) and restarts; approvals wait in the database for as long as needed;
many worker processes can share one PostgreSQL database.

>>> engine = DurableEngine(load_agents("myproject.agents"))  # doctest: +SKIP
"""

from .engine import DurableEngine
from .records import (
    TERMINAL,
    Conflict,
    InvalidArguments,
    NotFound,
    PendingApproval,
    RunRecord,
    RunState,
    StoredEvent,
)
from .registry import load_agents

__all__ = [
    "TERMINAL",
    "Conflict",
    "DurableEngine",
    "InvalidArguments",
    "NotFound",
    "PendingApproval",
    "RunRecord",
    "RunState",
    "StoredEvent",
    "load_agents",
]
