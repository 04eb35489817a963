"""Capabilities: the one way to extend a run.

A :class:`Capability` overrides any of its optional, async hooks; the run calls them in a
defined order. ``before_*`` hooks and ``start`` run in the order the capabilities were
given, ``after_*`` hooks and ``end`` in reverse (the first capability wraps the others).

- ``start(run)`` / ``end(run)``: the run's (and the capability's) lifecycle; ``end`` sees
  the final state and runs before ``run_finished`` goes out, also after an error.
- ``tools(run)``: tools to add for this run, listed after ``start`` (a toolset, e.g. an MCP
  server); ``wrap_model`` / ``wrap_tool``: replace the run's model or a tool (durable
  checkpoints).
- ``before_model(run, request)`` may return a changed :class:`ModelRequest`;
  ``after_model(run, response)`` a changed response.
- ``before_tool(run, call)`` decides a validated call: :class:`Allow`, :class:`Deny` (the
  model sees the reason), :class:`Ask` (a human decides; the run pauses unless an approver
  answers) or :class:`Rewrite` (other arguments; the transcript keeps both). The first
  ``Deny`` wins; a human's decision answers an ``Ask`` but never overrides a ``Deny``.
- ``decide(run, request)`` answers an ``Ask`` (an approval callback, a console).
- ``after_tool(run, call, result)`` may return a changed result.
- ``on_event(run, event)`` sees every event of the run.
- ``for_child(run_id)`` returns what applies to a child run (an agent used as a tool), or
  ``None``.

A hook that raises fails the run cleanly: every call that started gets a result, the error
names the capability and the hook.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from .approval import ApprovalRequest, Decision
from .messages import AssistantMessage, Message, ToolCallPart, ToolDefinition, ToolResultPart
from .models import Model, ModelSettings
from .tools import Tool

if TYPE_CHECKING:
    from .events import Event
    from .run import RunContext

__all__ = [
    "Allow",
    "Ask",
    "Capability",
    "CapabilityError",
    "Deny",
    "ModelRequest",
    "Rewrite",
    "ToolCall",
    "Verdict",
]


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the call run (the default when no capability has an opinion)."""


@dataclass(frozen=True, slots=True)
class Deny:
    """Do not run the call; the model sees ``reason`` as the call's error result."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ask:
    """A human must decide; ``reason`` is shown with the pending call."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Run the call with ``arguments`` instead (validated against the tool's schema)."""

    arguments: dict[str, Any]
    reason: str = ""


Verdict: TypeAlias = Allow | Deny | Ask | Rewrite


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What the next model call sends."""

    messages: Sequence[Message]
    tools: Sequence[ToolDefinition]
    settings: ModelSettings


@dataclass(slots=True)
class ToolCall:
    """A validated call about to run: the model's part, the tool and the arguments."""

    part: ToolCallPart
    tool: Tool
    args: dict[str, Any]
    reasons: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.part.id

    @property
    def name(self) -> str:
        return self.part.name


class CapabilityError(Exception):
    """A capability's hook raised: the run fails with this, naming the hook."""


class Capability:
    """Base class: override the hooks you need (see the module docstring)."""

    name: str = ""

    def label(self) -> str:
        return self.name or type(self).__name__

    async def start(self, run: RunContext) -> None:
        return None

    async def tools(self, run: RunContext) -> Sequence[Tool]:
        return ()

    def wrap_model(self, run: RunContext, model: Model) -> Model:
        return model

    def wrap_tool(self, run: RunContext, tool: Tool) -> Tool:
        return tool

    async def before_model(self, run: RunContext, request: ModelRequest) -> ModelRequest | None:
        return None

    async def after_model(
        self, run: RunContext, response: AssistantMessage
    ) -> AssistantMessage | None:
        return None

    async def before_tool(self, run: RunContext, call: ToolCall) -> Verdict | None:
        return None

    async def decide(self, run: RunContext, request: ApprovalRequest) -> Decision | None:
        return None

    async def after_tool(
        self, run: RunContext, call: ToolCall, result: ToolResultPart
    ) -> ToolResultPart | None:
        return None

    async def on_event(self, run: RunContext, event: Event) -> None:
        return None

    async def end(self, run: RunContext) -> None:
        return None

    def for_child(self, run_id: str) -> Capability | None:
        return None


HOOKS = (
    "start",
    "tools",
    "wrap_model",
    "wrap_tool",
    "before_model",
    "after_model",
    "before_tool",
    "decide",
    "after_tool",
    "on_event",
    "end",
)


def overriding(capabilities: Sequence[Capability], hook: str) -> tuple[Capability, ...]:
    """The capabilities that override ``hook`` (so an unused hook costs nothing)."""
    base = getattr(Capability, hook)
    return tuple(c for c in capabilities if getattr(type(c), hook) is not base)
