"""An agent used as a tool of another agent (the mechanism lives in the core:
:mod:`loopwise.agent_tool`)."""

from ..agent_tool import agent_tool, child_error, run_child

__all__ = ["agent_tool", "child_error", "run_child"]
