"""Plan-then-execute: the calls a run may make are fixed from the trusted task before any
untrusted data is read; every later call must match an unused step of the plan.

The plan comes from the developer (:class:`Plan`) or from the run's model, asked once at
the start with the task and the tool list and no tools to call, before any tool has run.
Untrusted data may still shape the arguments a step leaves open (pin them in the plan to
forbid that), but it cannot add a call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..capabilities import Capability, Deny, ToolCall, Verdict
from ..errors import ModelError, UsageError
from ..events import PolicyDecision
from ..messages import Message, SystemMessage, UserMessage
from ..models import ModelSettings
from ..run import RunContext
from ..tools import Effect
from .effects import effects_of

__all__ = ["PLAN_MARKER", "Plan", "PlanStep", "PlanThenExecute"]

PLAN_MARKER = "[loopwise:plan]"
_META = "loopwise.plan"
_JSON = re.compile(r"\{.*\}|\[.*\]", re.S)


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One planned call: the tool, the argument values it must have (others are free), and
    whether it may run more than once."""

    tool: str
    args: Mapping[str, Any] = field(default_factory=dict)
    repeat: bool = False

    def matches(self, name: str, args: Mapping[str, Any]) -> bool:
        if name != self.tool:
            return False
        return all(k in args and _same(args[k], v) for k, v in self.args.items())

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "args": dict(self.args), "repeat": self.repeat}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class Plan:
    """The calls a run may make, fixed before untrusted data is read."""

    steps: tuple[PlanStep, ...]

    @classmethod
    def of(cls, data: Sequence[Mapping[str, Any] | PlanStep | str]) -> Plan:
        """A plan from steps, dicts (``tool``, ``args``, ``repeat``) or bare tool names."""
        steps: list[PlanStep] = []
        for item in data:
            if isinstance(item, PlanStep):
                steps.append(item)
            elif isinstance(item, str):
                steps.append(PlanStep(item))
            elif isinstance(item, Mapping) and isinstance(item.get("tool"), str):
                args = item.get("args") or {}
                if not isinstance(args, Mapping):
                    raise UsageError(f"A plan step's args must be an object, not {args!r}.")
                steps.append(PlanStep(item["tool"], dict(args), bool(item.get("repeat", False))))
            else:
                raise UsageError(f"A plan step needs a tool name, got {item!r}.")
        return cls(tuple(steps))


def _planning_prompt(run: RunContext) -> str:
    tools = "\n".join(
        f"- {d.name}: {d.description.splitlines()[0] if d.description else ''} "
        f"(arguments: {', '.join(d.parameters.get('properties', {}))})"
        for d in run.tool_defs
    )
    return (
        f"{PLAN_MARKER} Before doing anything, write the plan for the task below: every tool "
        "call it needs, in order, as JSON: "
        '{"steps": [{"tool": "<name>", "args": {<only values the task itself gives>}, '
        '"repeat": false}]}. Leave out arguments that will come from data you have not read '
        "yet. Calls not in the plan will be refused. Tools:\n" + tools
    )


class PlanThenExecute(Capability):
    """Fix the calls from the trusted task, then refuse any call outside the plan.

    ``plan`` fixes it in code; without one the run's model is asked at the start. Calls
    whose tools only read (``allow_reads``) need no step; ``effects`` sets tools' effects
    by name, ``undeclared`` is what a tool with none declared may do.
    """

    name = "plan"

    def __init__(
        self,
        plan: Plan | Sequence[Mapping[str, Any] | PlanStep | str] | None = None,
        *,
        allow_reads: bool = True,
        effects: Mapping[str, Sequence[Effect]] | None = None,
        undeclared: Sequence[Effect] = ("external",),
    ):
        self.plan = plan if isinstance(plan, Plan) or plan is None else Plan.of(plan)
        self.allow_reads = allow_reads
        self.effects = {k: frozenset(v) for k, v in (effects or {}).items()}
        self.undeclared: frozenset[Effect] = frozenset(undeclared)
        self._runs: dict[str, tuple[Plan, list[bool]]] = {}

    async def start(self, run: RunContext) -> None:
        saved = run.metadata.get(_META)
        if isinstance(saved, dict) and saved.get("run") == run.run_id and run.state.steps:
            plan = Plan.of(saved.get("steps", ()))
            used = [bool(u) for u in saved.get("used", ())][: len(plan.steps)]
            used += [False] * (len(plan.steps) - len(used))
        else:
            plan = self.plan or await self._ask_model(run)
            used = [False] * len(plan.steps)
        self._runs[run.run_id] = (plan, used)
        self._save(run)

    async def _ask_model(self, run: RunContext) -> Plan:
        """The model's plan from the trusted task alone (nothing untrusted has been read)."""
        if run.state.tainted or run.state.steps:
            return Plan(())  # too late to plan from trusted input only
        system = [m for m in run.state.messages if isinstance(m, SystemMessage)]
        request: list[Message] = [
            *system,
            UserMessage.text(f"{_planning_prompt(run)}\n\nTask:\n{run.input_text}"),
        ]
        try:
            reply = await run.budgeted_model().request(
                request, [], ModelSettings(tool_choice="none")
            )
        except ModelError:
            return Plan(())
        return _parse_plan(reply.text)

    def _save(self, run: RunContext) -> None:
        plan, used = self._runs[run.run_id]
        run.metadata[_META] = {
            "run": run.run_id,
            "steps": [s.to_dict() for s in plan.steps],
            "used": list(used),
        }

    async def before_tool(self, run: RunContext, call: ToolCall) -> Verdict | None:
        found = self._runs.get(run.run_id)
        if found is None:
            return None
        effects = effects_of(call.tool, self.effects, self.undeclared)
        if self.allow_reads and effects <= {"read"}:
            return None
        plan, used = found
        for i, step in enumerate(plan.steps):
            if (step.repeat or not used[i]) and step.matches(call.name, call.args):
                used[i] = True
                self._save(run)
                return None
        planned = ", ".join(s.tool for s, u in zip(plan.steps, used, strict=True) if not u)
        reason = (
            f"policy rule 'plan': the call to {call.name!r} with these arguments is not in the "
            f"plan fixed from the task before untrusted data was read (steps left: "
            f"{planned or 'none'})"
        )
        run.emit(
            PolicyDecision(
                run_id=run.run_id,
                step=run.state.steps,
                call_id=call.id,
                name=call.name,
                action="deny",
                rule="plan",
                reason=reason,
                taint=list(run.state.untrusted[-10:]),
            )
        )
        return Deny(reason)

    async def end(self, run: RunContext) -> None:
        self._runs.pop(run.run_id, None)

    def for_child(self, run_id: str) -> Capability | None:
        return _ChildPlan(self)


class _ChildPlan(PlanThenExecute):
    """A child run (an agent used as a tool) plans nothing: it may only read."""

    def __init__(self, parent: PlanThenExecute):
        super().__init__(Plan(()), effects={k: tuple(v) for k, v in parent.effects.items()})
        self.undeclared = parent.undeclared


def _parse_plan(text: str) -> Plan:
    """A plan from the model's reply; anything unreadable is the empty plan (nothing runs)."""
    match = _JSON.search(text)
    if match is None:
        return Plan(())
    try:
        data = json.loads(match.group(0))
        steps = data.get("steps", ()) if isinstance(data, dict) else data
        return Plan.of(steps)
    except (ValueError, UsageError, AttributeError, TypeError):
        return Plan(())
