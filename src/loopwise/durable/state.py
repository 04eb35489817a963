"""A run's saved state where a segment ended: the run's own :class:`~loopwise.state.RunState`
as JSON, plus the number of events stored so far.

Read back through :meth:`RunState.from_dict` (messages through pydantic validation): a
tampered row is rejected as invalid data, never executed.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..messages import Message
from ..state import RunState

__all__ = ["messages_of", "run_state_of", "saved_state"]


def saved_state(state: RunState, seq: int) -> dict[str, Any]:
    """``state`` and the number of events so far, as JSON data."""
    return {"seq": seq, "state": state.to_dict()}


def run_state_of(saved: dict[str, Any]) -> RunState:
    """The :class:`RunState` a saved row holds (``UsageError`` if malformed)."""
    if not isinstance(saved, dict) or "state" not in saved:
        raise UsageError("The saved state of the run is malformed: no run state in it.")
    return RunState.from_dict(saved["state"])


def messages_of(saved: dict[str, Any]) -> list[Message]:
    return run_state_of(saved).messages
