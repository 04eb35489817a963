"""The outcome of a run: status, why it stopped, the answer, what it cost, the transcript."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias

from pydantic_core import to_jsonable_python
from typing_extensions import TypeVar

from .approval import ApprovalRequest
from .messages import Message, Usage, dump_messages

if TYPE_CHECKING:
    from .state import RunState

__all__ = ["RunResult", "RunStatus"]

OutputT = TypeVar("OutputT", default=str)
RunStatus: TypeAlias = Literal["completed", "incomplete", "failed", "input_required", "cancelled"]


@dataclass(slots=True)
class RunResult(Generic[OutputT]):
    """What a run produced.

    ``status`` is ``completed``, ``incomplete`` (a limit stopped it: see ``stop_reason``
    and ``detail``), ``failed`` (see ``error``), ``input_required`` (calls in
    ``pending_approvals`` wait for a decision) or ``cancelled``. ``output`` is set only
    when completed. ``messages`` is the whole transcript; it round-trips through JSON
    (``dump_messages``/``load_messages``).
    """

    run_id: str
    status: RunStatus
    output: OutputT | None
    stop_reason: str | None = None
    error: str | None = None
    detail: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    steps: int = 0
    tool_calls: int = 0
    duration: float = 0.0
    messages: list[Message] = field(default_factory=list)
    pending_approvals: list[ApprovalRequest] = field(default_factory=list)
    model: str | None = None
    parent_run_id: str | None = None
    """The run that started this one, when it ran as a tool of another agent."""
    state: RunState | None = field(default=None, repr=False, compare=False)
    """The whole run as one value: continue it with ``agent.run(result.state)``."""

    @classmethod
    def of(cls, state: RunState, output: Any = None) -> RunResult[Any]:
        """The result a run's final ``state`` describes (``output`` typed, when completed)."""
        return cls(
            run_id=state.run_id,
            status=state.status,  # type: ignore[arg-type]
            output=output if state.status == "completed" else None,
            stop_reason=state.stop_reason,
            error=state.error,
            detail=state.detail,
            usage=state.usage,
            cost_usd=state.cost_usd,
            steps=state.steps,
            tool_calls=state.tool_calls,
            duration=state.spend.seconds,
            messages=list(state.messages),
            pending_approvals=[
                ApprovalRequest(state.run_id, p.call_id, p.tool, dict(p.args), p.reason)
                for p in state.pending
            ],
            model=state.model,
            parent_run_id=state.parent_run_id,
            state=state,
        )

    def summary(self) -> dict[str, Any]:
        """The result as plain JSON data, without the transcript (what ``--json`` prints)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "output": to_jsonable_python(self.output),
            "error": self.error,
            "detail": self.detail,
            "usage": asdict(self.usage),
            "cost_usd": self.cost_usd,
            "steps": self.steps,
            "tool_calls": self.tool_calls,
            "duration": round(self.duration, 3),
            "model": self.model,
            "parent_run_id": self.parent_run_id,
            "pending_approvals": [
                {"call_id": p.call_id, "tool": p.tool_name, "args": p.args}
                for p in self.pending_approvals
            ],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """The summary plus the transcript, as JSON text."""
        data = self.summary()
        data["messages"] = json.loads(dump_messages(self.messages))
        return json.dumps(data, indent=indent, ensure_ascii=False)
