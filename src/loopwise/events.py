"""Typed events of a run. The CLI, the service's event stream and the tests all consume these.

Every event carries the run id, the step number (model calls made so far) and the time
(Unix seconds). ``parse_event`` turns the JSON back into the right class.
"""

from __future__ import annotations

import time
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

if TYPE_CHECKING:
    from pydantic import TypeAdapter

from dataclasses import dataclass, field

from .messages import Usage

__all__ = [
    "ApprovalRequested",
    "BudgetWarning",
    "ContextCompacted",
    "Event",
    "LoopDetected",
    "MemoryRecalled",
    "ModelRequested",
    "ModelResponded",
    "ModelText",
    "OutputRetry",
    "PolicyDecision",
    "RunFinished",
    "RunStarted",
    "TextDelta",
    "ToolCalled",
    "ToolProgress",
    "ToolResulted",
    "parse_event",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    run_id: str
    step: int
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON data (``parse_event`` reads it back)."""
        data: dict[str, Any] = _event_adapter().dump_python(self, mode="json")  # type: ignore[arg-type]
        return data

    def to_json(self) -> str:
        return _event_adapter().dump_json(self).decode()  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(_Event):
    """A run began; a child run (an agent used as a tool) names its parent and depth."""

    type: Literal["run_started"] = "run_started"
    agent: str | None
    model: str
    input: str
    parent_run_id: str | None = None
    depth: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRequested(_Event):
    """Sent before each model call, with what the budget allowed it to spend."""

    type: Literal["model_request"] = "model_request"
    messages: int
    estimated_input_tokens: int
    max_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta(_Event):
    """A piece of streamed model text (only from models that stream)."""

    type: Literal["text_delta"] = "text_delta"
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResponded(_Event):
    """A model call finished: its usage and cost, and the run's totals so far."""

    type: Literal["model_response"] = "model_response"
    usage: Usage
    cost_usd: float
    total_usage: Usage
    total_cost_usd: float
    finish_reason: str | None
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelText(_Event):
    """The model's text: a thought before tool calls, or the final answer."""

    type: Literal["model_text"] = "model_text"
    text: str
    final: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCalled(_Event):
    type: Literal["tool_call"] = "tool_call"
    call_id: str
    name: str
    args: dict[str, Any]
    """The arguments the call runs with."""
    original_args: dict[str, Any] | None = None
    """The model's arguments, when an approver or a capability changed them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResulted(_Event):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    content: str
    is_error: bool
    duration: float
    images: int = 0
    """How many images the result carries besides ``content`` (shown as "[1 image]")."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequested(_Event):
    type: Literal["approval_requested"] = "approval_requested"
    call_id: str
    name: str
    args: dict[str, Any]
    reason: str = "requires_approval"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopDetected(_Event):
    """The model is repeating itself; ``action`` is ``nudge`` first, then ``stop``."""

    type: Literal["loop_detected"] = "loop_detected"
    kind: Literal["repeated_call", "alternation", "repeated_error"]
    detail: str
    action: Literal["nudge", "stop"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextCompacted(_Event):
    type: Literal["context_compacted"] = "context_compacted"
    strategy: Literal["shorten_tool_results", "summarise", "drop_oldest"]
    tokens_before: int
    tokens_after: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetWarning(_Event):
    """A budget crossed its warning fraction (80 % by default)."""

    type: Literal["budget_warning"] = "budget_warning"
    limit: str
    used: float
    maximum: float


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputRetry(_Event):
    """The final answer did not match the output type; the model was asked again."""

    type: Literal["output_retry"] = "output_retry"
    error: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryRecalled(_Event):
    """Long-term memories given to the model with the task (``ids``, best first); sent
    once at the start of a run whose agent has a memory, also when none was relevant."""

    type: Literal["memory_recalled"] = "memory_recalled"
    ids: list[str]
    untrusted: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    status: str
    stop_reason: str | None
    output: Any
    error: str | None
    usage: Usage
    cost_usd: float
    steps: int
    duration: float
    parent_run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDecision(_Event):
    """A policy decided a tool call (``deny``, ``ask``, or an ``allow`` worth recording):
    the rule that matched, why, and the untrusted sources that had entered the run."""

    type: Literal["policy_decision"] = "policy_decision"
    call_id: str
    name: str
    action: Literal["allow", "ask", "deny"]
    rule: str
    reason: str
    taint: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolProgress(_Event):
    """A running tool reported progress (an MCP server's progress notification)."""

    type: Literal["tool_progress"] = "tool_progress"
    call_id: str
    name: str
    progress: float
    total: float | None = None
    message: str = ""


Event: TypeAlias = (
    RunStarted
    | ModelRequested
    | TextDelta
    | ModelResponded
    | ModelText
    | ToolCalled
    | ToolResulted
    | ApprovalRequested
    | LoopDetected
    | ContextCompacted
    | BudgetWarning
    | OutputRetry
    | MemoryRecalled
    | RunFinished
    | PolicyDecision
    | ToolProgress
)


@cache
def _event_adapter() -> TypeAdapter[Event]:
    from pydantic import Field, TypeAdapter

    return TypeAdapter(Annotated[Event, Field(discriminator="type")])


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Parse an event from its JSON (text or decoded) back into its class."""
    if isinstance(data, dict):
        return _event_adapter().validate_python(data)
    return _event_adapter().validate_json(data)
