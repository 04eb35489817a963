"""A run's state where a segment ended, as plain JSON: the transcript, totals, pending calls.

Read back through pydantic validation (``load_messages``): a tampered row is rejected as
invalid data, never executed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from pydantic_core import to_jsonable_python

from ..approval import ApprovalRequest
from ..errors import UsageError
from ..messages import Message, Usage, dump_messages, load_messages
from ..result import RunResult

__all__ = ["messages_of", "result_from_state", "state_of"]

_STATUSES = ("completed", "incomplete", "failed", "input_required", "cancelled")


def state_of(result: RunResult[Any], seq: int) -> dict[str, Any]:
    """``result`` and the number of events so far, as JSON data."""
    return {
        "seq": seq,
        "result": {
            "run_id": result.run_id,
            "status": result.status,
            "stop_reason": result.stop_reason,
            "error": result.error,
            "detail": result.detail,
            "usage": asdict(result.usage),
            "cost_usd": result.cost_usd,
            "steps": result.steps,
            "tool_calls": result.tool_calls,
            "duration": result.duration,
            "model": result.model,
            "output": to_jsonable_python(result.output),
            "pending": [
                {"call_id": p.call_id, "tool": p.tool_name, "args": p.args}
                for p in result.pending_approvals
            ],
        },
        "messages": json.loads(dump_messages(result.messages)),
    }


def messages_of(state: dict[str, Any]) -> list[Message]:
    return load_messages(state.get("messages") or [])


def result_from_state(state: dict[str, Any]) -> RunResult[Any]:
    """The paused :class:`RunResult` a state describes (``UsageError`` if malformed)."""
    try:
        r = state["result"]
        status = r["status"]
        if status not in _STATUSES:
            raise ValueError(f"unknown status {status!r}")
        return RunResult(
            run_id=str(r["run_id"]),
            status=status,
            output=None,
            stop_reason=r.get("stop_reason"),
            error=r.get("error"),
            detail=r.get("detail"),
            usage=Usage(**r["usage"]),
            cost_usd=float(r["cost_usd"]),
            steps=int(r["steps"]),
            tool_calls=int(r["tool_calls"]),
            duration=float(r["duration"]),
            messages=messages_of(state),
            pending_approvals=[
                ApprovalRequest(
                    str(r["run_id"]), str(p["call_id"]), str(p["tool"]), dict(p["args"])
                )
                for p in r["pending"]
            ],
            model=r.get("model"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"The saved state of the run is malformed: {exc}") from None
