"""Request and response bodies of the HTTP API (pydantic models: they are the OpenAPI schema)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ..durable.records import Decision, PendingApproval, RunRecord
from ..models import KNOWN_PROVIDERS

__all__ = [
    "MAX_DEPTH",
    "MAX_INPUT_CHARS",
    "NO_NUL",
    "AgentInfo",
    "AgentList",
    "ApproveIn",
    "BudgetIn",
    "DecisionIn",
    "DecisionOut",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "PendingApprovalOut",
    "RejectIn",
    "RunCreate",
    "RunList",
    "RunOut",
    "RunStatus",
    "ToolInfo",
]

MAX_INPUT_CHARS = 25_000
"""The longest task a run may be given, in characters: 25,000 always fit the engine's limit
of 100,000 bytes of UTF-8 (one character is at most 4 bytes)."""
MAX_DEPTH = 32
"""How deeply edited ``arguments`` may nest (objects and arrays)."""
MAX_ARGUMENTS_BYTES = 100_000
"""Edited arguments, as ASCII JSON (what the engine measures)."""
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TASK_PATTERN = f"^[^\\x00]*[^\\x00{_SPACE}][^\\x00]*$"
"""Text that is not all whitespace (Python's idea of it) and has no NUL (PostgreSQL
refuses NUL in text columns)."""
NO_NUL = r"^[^\x00]+$"
# "local" (the embedded model's own weights) is accepted, never "local:<path>": that would let
# a client make the server open any file.
MODEL_PATTERN = f"^(local|({'|'.join(KNOWN_PROVIDERS)}):[^\\x00]+)$"

# Metadata is small labels: 10 entries of at most 30 + 100 characters stay under the
# engine's 16,000 bytes of ASCII JSON even when every character needs a 12-byte escape.
MetadataKey: TypeAlias = Annotated[str, Field(min_length=1, max_length=30)]
MetadataValue: TypeAlias = (
    Annotated[str, Field(max_length=100)]
    | Annotated[int, Field(ge=-(2**53), le=2**53)]
    | float
    | bool
    | None
)
"""(Strict validation keeps each value's JSON type: 1.0 stays a float, true a boolean.)"""

RunStatus = Literal[
    "queued", "in_progress", "input_required", "completed", "incomplete", "failed", "cancelled"
]


def _depth(value: Any) -> int:
    """Nesting depth of JSON data (a scalar is 0), found without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _bounded(value: dict[str, Any] | None, what: str, max_bytes: int) -> dict[str, Any] | None:
    if value is None:
        return None
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"{what} nests deeper than {MAX_DEPTH} levels")
    try:
        size = len(json.dumps(value, allow_nan=False))
    except ValueError:
        raise ValueError(f"{what} must be plain JSON, without NaN or Infinity") from None
    if size > max_bytes:
        raise ValueError(f"{what} is {size} bytes as JSON; the most allowed is {max_bytes}")
    return value


class _Strict(BaseModel):
    """A request body: no unknown fields, no coercion (``false`` is not ``0``)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _integral(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer; so do we (true and false are not numbers)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_Count = BeforeValidator(_integral)


class BudgetIn(_Strict):
    """Hard limits for this run (each optional; the agent's own budget fills the rest)."""

    max_usd: float | None = Field(default=None, ge=0, le=1e9)
    max_tokens: Annotated[int, Field(ge=1, le=10**12), _Count] | None = None
    max_seconds: float | None = Field(default=None, ge=0, le=1e9)
    max_tool_calls: Annotated[int, Field(ge=0, le=10**9), _Count] | None = None


class RunCreate(_Strict):
    """A run to start: which registered agent, on what task."""

    agent: str = Field(min_length=1, max_length=200, description="A name from GET /v1/agents.")
    input: str = Field(
        max_length=MAX_INPUT_CHARS, pattern=TASK_PATTERN, description="The task (not blank)."
    )
    model: str | None = Field(
        default=None,
        max_length=200,
        pattern=MODEL_PATTERN,
        description="provider:model overriding the agent's model, e.g. openai:gpt-4.1, or "
        "local (the embedded model).",
    )
    budget: BudgetIn | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None,
        max_length=10,
        description="Your own labels, kept with the run: at most 10 keys of up to 30 "
        "characters, each a number, boolean, null or text of up to 100 characters.",
    )


class ApproveIn(_Strict):
    """Run the call, with the arguments it was asked with or with edited ones."""

    decision: Literal["approve"]
    arguments: dict[str, Any] | None = Field(
        default=None, description="Edited arguments, validated against the tool's schema."
    )
    reason: str | None = Field(default=None, max_length=2000)

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _bounded(value, "arguments", MAX_ARGUMENTS_BYTES)


class RejectIn(_Strict):
    """Do not run the call; the model is told it was rejected, with the reason."""

    decision: Literal["reject"]
    reason: str | None = Field(default=None, max_length=2000)


DecisionIn: TypeAlias = Annotated[ApproveIn | RejectIn, Field(discriminator="decision")]
"""A human decision on one pending call."""


class PendingApprovalOut(BaseModel):
    """A call waiting for a decision; ``reason`` is ``interrupted`` after a crash."""

    call_id: str
    tool: str
    arguments: dict[str, Any]
    reason: str

    @classmethod
    def of(cls, pending: PendingApproval) -> PendingApprovalOut:
        return cls(
            call_id=pending.call_id,
            tool=pending.tool,
            arguments=pending.arguments,
            reason=pending.reason,
        )


class DecisionOut(BaseModel):
    """A decision made on one of the run's calls: by whom (the key's principal) and when."""

    call_id: str
    approve: bool
    principal: str | None
    reason: str | None
    decided_at: float

    @classmethod
    def of(cls, decision: Decision) -> DecisionOut:
        return cls(
            call_id=decision.call_id,
            approve=decision.approve,
            principal=decision.principal,
            reason=decision.reason,
            decided_at=decision.decided_at,
        )


class RunOut(BaseModel):
    """A run: its state, result, spend and what it waits for. Times are Unix seconds."""

    id: str
    agent: str
    status: RunStatus
    input: str
    model: str | None
    stop_reason: str | None
    detail: str | None
    output: Any
    error: str | None
    usage: dict[str, int]
    cost_usd: float
    steps: int
    tool_calls: int
    pending_approvals: list[PendingApprovalOut]
    decisions: list[DecisionOut]
    metadata: dict[str, Any]
    principal: str | None = Field(description="Who started the run (its API key's principal).")
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def of(cls, record: RunRecord) -> RunOut:
        return cls(
            id=record.id,
            agent=record.agent,
            status=record.status,
            input=record.input,
            model=record.model,
            stop_reason=record.stop_reason,
            detail=record.detail,
            output=record.output,
            error=record.error,
            usage=dict(record.usage),
            cost_usd=record.cost_usd,
            steps=record.steps,
            tool_calls=record.tool_calls,
            pending_approvals=[PendingApprovalOut.of(p) for p in record.pending_approvals],
            decisions=[DecisionOut.of(d) for d in record.decisions],
            metadata=dict(record.metadata),
            principal=record.principal,
            created_at=record.created_at,
            updated_at=record.updated_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
        )


class RunList(BaseModel):
    """A page of runs, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    data: list[RunOut]
    next_cursor: str | None


class ToolInfo(BaseModel):
    name: str
    description: str
    requires_approval: bool | Literal["conditional"]
    parameters: dict[str, Any]


class AgentInfo(BaseModel):
    """A registered agent: its name in the API, its model, prompt summary and tools."""

    name: str
    description: str
    model: str | None
    max_steps: int
    tools: list[ToolInfo]


class AgentList(BaseModel):
    data: list[AgentInfo]


class Health(BaseModel):
    status: Literal["ok"]


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable, e.g. not_found, conflict, invalid_request.")
    message: str = Field(description="One sentence saying what went wrong.")


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail
