"""A run as one plain, serialisable value: :class:`RunState`.

Everything a run is lives here — the messages, the calls waiting for a decision, what the
run has spent, the loop detector's memory, the status — so pausing a run is returning its
state, approving is :meth:`RunState.approve`, and resuming is ``agent.run(state)``. The
state round-trips exactly through :meth:`RunState.to_json` / :meth:`RunState.from_json`
(the durable engine stores this same JSON).

JSON has no NaN or Infinity: a tool call whose arguments hold one is refused when the
model sends it (the model sees an invalid-arguments observation), and ``to_json`` refuses a
state that holds one anywhere with a :class:`~loopwise.errors.UsageError`. Integers of any
size survive exactly, up to Python's 4,300-digit limit on converting integers to text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

from .approval import Approve, Decision, Reject
from .context import History
from .errors import UsageError
from .limits import Spend
from .messages import Message, Usage, _messages_adapter, load_messages
from .repetition import LoopMemory

__all__ = ["STATE_VERSION", "PendingCall", "RunState", "RunStatus"]

STATE_VERSION = 1
RunStatus: TypeAlias = Literal[
    "queued", "in_progress", "input_required", "completed", "incomplete", "failed", "cancelled"
]
_STATUSES = RunStatus.__args__  # type: ignore[attr-defined]


@dataclass(slots=True)
class PendingCall:
    """A tool call waiting for a human decision: why it waits, and the decision once given.

    ``reason`` is ``requires_approval`` (the tool's rule), ``interrupted`` (a
    non-idempotent call cut short by a crash) or what a capability said when it asked.
    """

    call_id: str
    tool: str
    args: dict[str, Any]
    reason: str = "requires_approval"
    decision: Decision | None = None


@dataclass(slots=True)
class RunState:
    """Everything a run is, as plain data (see the module docstring)."""

    run_id: str
    history: History = field(default_factory=History)
    spend: Spend = field(default_factory=Spend)
    loop: LoopMemory = field(default_factory=LoopMemory)
    status: RunStatus = "queued"
    stop_reason: str | None = None
    error: str | None = None
    detail: str | None = None
    output: Any = None
    """The final answer as JSON data (``RunResult.output`` has it typed)."""
    pending: list[PendingCall] = field(default_factory=list)
    output_attempts: int = 0
    parent_run_id: str | None = None
    depth: int = 0
    agent: str | None = None
    model: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    untrusted: list[str] = field(default_factory=list)
    """Where untrusted content entered the context, in order (``tool:<name>:<call id>``,
    ``memory:<id>``, ...): once it holds anything, every later call may have been steered."""

    @property
    def tainted(self) -> bool:
        """Whether untrusted content has entered the run's context."""
        return bool(self.untrusted)

    # -- reading ----------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        return self.history.messages

    @property
    def usage(self) -> Usage:
        return self.spend.usage

    @property
    def cost_usd(self) -> float:
        return self.spend.cost_usd

    @property
    def steps(self) -> int:
        return self.spend.steps

    @property
    def tool_calls(self) -> int:
        return self.spend.tool_calls

    @property
    def undecided(self) -> list[PendingCall]:
        """Pending calls that have no decision yet."""
        return [p for p in self.pending if p.decision is None]

    # -- deciding ---------------------------------------------------------------------

    def approve(self, call_id: str, arguments: dict[str, Any] | None = None) -> None:
        """Approve a pending call; with ``arguments`` it runs with these (validated when
        the run continues) and the transcript records both."""
        self._pending(call_id).decision = Approve(dict(arguments) if arguments else None)

    def reject(self, call_id: str, reason: str = "rejected by the user") -> None:
        """Reject a pending call; the model is told so, with ``reason``."""
        self._pending(call_id).decision = Reject(reason)

    def _pending(self, call_id: str) -> PendingCall:
        for p in self.pending:
            if p.call_id == call_id:
                return p
        ids = ", ".join(p.call_id for p in self.pending) or "none"
        raise UsageError(f"No pending call has the id {call_id!r}; pending: {ids}.")

    def copy(self) -> RunState:
        """An independent copy (messages are immutable and shared)."""
        history = History.of((), counter=self.history.counter)
        history.messages, history.counts = list(self.history.messages), list(self.history.counts)
        history.total, history.scale = self.history.total, self.history.scale
        spend = replace(self.spend, warned=list(self.spend.warned))
        return replace(
            self,
            history=history,
            spend=spend,
            loop=LoopMemory.from_dict(self.loop.to_dict()),
            pending=[replace(p, args=dict(p.args)) for p in self.pending],
            metadata=dict(self.metadata),
            untrusted=list(self.untrusted),
        )

    # -- JSON -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON data (no NaN or Infinity anywhere: see the module docstring)."""
        data = {
            "version": STATE_VERSION,
            "run_id": self.run_id,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "detail": self.detail,
            "output": self.output,
            "messages": _messages_adapter().dump_python(self.history.messages),
            "calibration": self.history.scale,
            "pending": [_dump_pending(p) for p in self.pending],
            "spend": _dump_spend(self.spend),
            "loop": self.loop.to_dict(),
            "output_attempts": self.output_attempts,
            "parent_run_id": self.parent_run_id,
            "depth": self.depth,
            "agent": self.agent,
            "model": self.model,
            "metadata": self.metadata,
            "untrusted": list(self.untrusted),
        }
        _check_finite(data)
        return data

    def to_json(self, *, indent: int | None = None) -> str:
        try:
            return json.dumps(self.to_dict(), allow_nan=False, ensure_ascii=False, indent=indent)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"The run state cannot be written as JSON: {exc}.") from None

    @classmethod
    def from_dict(cls, data: Any) -> RunState:
        """A state from :meth:`to_dict` data; malformed data is a ``UsageError``, never run."""
        try:
            return _load(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"The run state is malformed: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> RunState:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"The run state is not valid JSON: {exc}.") from None
        return cls.from_dict(data)

    @classmethod
    def start(cls, run_id: str, messages: Sequence[Message] = ()) -> RunState:
        """A new run's state holding ``messages``."""
        return cls(run_id=run_id, history=History.of(messages))


def _dump_pending(p: PendingCall) -> dict[str, Any]:
    data: dict[str, Any] = {
        "call_id": p.call_id,
        "tool": p.tool,
        "args": p.args,
        "reason": p.reason,
    }
    if isinstance(p.decision, Approve):
        data["decision"] = {"approve": True, "arguments": p.decision.arguments}
    elif isinstance(p.decision, Reject):
        data["decision"] = {"approve": False, "reason": p.decision.reason}
    return data


def _load_pending(d: dict[str, Any]) -> PendingCall:
    decision: Decision | None = None
    raw = d.get("decision")
    if isinstance(raw, dict):
        if raw.get("approve") is True:
            arguments = raw.get("arguments")
            decision = Approve(dict(arguments) if isinstance(arguments, dict) else None)
        else:
            decision = Reject(str(raw.get("reason") or "rejected by the user"))
    args = d["args"]
    if not isinstance(args, dict):
        raise TypeError("a pending call's args must be an object")
    return PendingCall(str(d["call_id"]), str(d["tool"]), args, str(d["reason"]), decision)


def _dump_spend(s: Spend) -> dict[str, Any]:
    u = s.usage
    return {
        "usage": {
            "requests": u.requests,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "cost_usd": s.cost_usd,
        "steps": s.steps,
        "tool_calls": s.tool_calls,
        "seconds": s.seconds,
        "warned": list(s.warned),
    }


def _load_spend(d: dict[str, Any]) -> Spend:
    return Spend(
        usage=Usage(**{k: int(v) for k, v in d["usage"].items()}),
        cost_usd=float(d["cost_usd"]),
        steps=int(d["steps"]),
        tool_calls=int(d["tool_calls"]),
        seconds=float(d["seconds"]),
        warned=[str(w) for w in d.get("warned", ())],
    )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _load(data: Any) -> RunState:
    if not isinstance(data, dict):
        raise TypeError("expected a JSON object")
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"unknown state version {data.get('version')!r}")
    status = data["status"]
    if status not in _STATUSES:
        raise ValueError(f"unknown status {status!r}")
    history = History.of(load_messages(data["messages"]))
    history.scale = max(1.0, float(data.get("calibration", 1.0)))
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise TypeError("metadata must be an object")
    return RunState(
        run_id=str(data["run_id"]),
        history=history,
        spend=_load_spend(data["spend"]),
        loop=LoopMemory.from_dict(data.get("loop") or {}),
        status=status,
        stop_reason=_optional_str(data.get("stop_reason")),
        error=_optional_str(data.get("error")),
        detail=_optional_str(data.get("detail")),
        output=data.get("output"),
        pending=[_load_pending(p) for p in data.get("pending", ())],
        output_attempts=int(data.get("output_attempts", 0)),
        parent_run_id=_optional_str(data.get("parent_run_id")),
        depth=int(data.get("depth", 0)),
        agent=_optional_str(data.get("agent")),
        model=_optional_str(data.get("model")),
        metadata=metadata,
        untrusted=[str(u) for u in data.get("untrusted", ())],
    )


def _check_finite(value: Any) -> None:
    """Refuse NaN and Infinity anywhere in ``value`` (JSON cannot carry them); iterative,
    so a deeply nested value from a model cannot exhaust the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise UsageError(
                    f"The run state holds {item!r}, which JSON cannot carry; "
                    "tool arguments and outputs must be finite numbers."
                )
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


MAX_ARGS_DEPTH = 64


def unfit_json(value: Any) -> str | None:
    """Why ``value`` cannot stand as tool arguments in a run (NaN or Infinity, or nesting
    deeper than :data:`MAX_ARGS_DEPTH`), or None; iterative, whatever the depth."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_ARGS_DEPTH:
            return f"nested deeper than {MAX_ARGS_DEPTH} levels"
        if isinstance(item, float) and not math.isfinite(item):
            return "NaN or Infinity, which JSON cannot carry"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return None
