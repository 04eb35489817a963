"""Capabilities: ordered hooks around the run, model calls and tool calls."""

import ast
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from loopwise import (
    Agent,
    Allow,
    Approve,
    Ask,
    Capability,
    Deny,
    ModelRequest,
    Rewrite,
    RunContext,
    ToolCall,
    tool,
)
from loopwise.approval import ApprovalRequest, Decision
from loopwise.events import Event, ToolCalled
from loopwise.messages import (
    AssistantMessage,
    TextPart,
    ToolResultPart,
    UserMessage,
)
from loopwise.models.testing import ScriptedModel, call
from loopwise.tools import Tool

ROOT = Path(__file__).parent.parent


@tool
def echo(text: str) -> str:
    """Echo text."""
    return text


def results(messages: Sequence[Any]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


class Tracer(Capability):
    """Records the order in which its hooks run, under its name."""

    def __init__(self, name: str, trace: list[str]):
        self.name = name
        self.trace = trace

    async def start(self, run: RunContext) -> None:
        self.trace.append(f"{self.name}.start")

    async def before_model(self, run: RunContext, request: ModelRequest) -> None:
        self.trace.append(f"{self.name}.before_model")

    async def after_model(self, run: RunContext, response: AssistantMessage) -> None:
        self.trace.append(f"{self.name}.after_model")

    async def before_tool(self, run: RunContext, call: ToolCall) -> None:
        self.trace.append(f"{self.name}.before_tool")

    async def after_tool(self, run: RunContext, call: ToolCall, result: ToolResultPart) -> None:
        self.trace.append(f"{self.name}.after_tool")

    async def end(self, run: RunContext) -> None:
        self.trace.append(f"{self.name}.end:{run.state.status}")


def test_hooks_run_in_a_defined_order() -> None:
    trace: list[str] = []
    agent = Agent(
        ScriptedModel([call("echo", text="x"), "done"]),
        tools=[echo],
        capabilities=[Tracer("a", trace), Tracer("b", trace)],
    )
    assert agent.run_sync("go").status == "completed"
    assert trace == [
        "a.start", "b.start",
        "a.before_model", "b.before_model", "b.after_model", "a.after_model",
        "a.before_tool", "b.before_tool", "b.after_tool", "a.after_tool",
        "a.before_model", "b.before_model", "b.after_model", "a.after_model",
        "b.end:completed", "a.end:completed",
    ]  # fmt: skip


class Gate(Capability):
    def __init__(self, verdict: Any):
        self.verdict = verdict

    async def before_tool(self, run: RunContext, call: ToolCall) -> Any:
        return self.verdict


def test_deny_is_shown_to_the_model_and_nothing_runs() -> None:
    ran: list[str] = []

    @tool
    def act(x: str) -> str:
        """Act."""
        ran.append(x)
        return "acted"

    model = ScriptedModel([call("act", x="1"), "ok"])
    result = Agent(model, tools=[act], capabilities=[Gate(Deny("not here"))]).run_sync("go")
    assert ran == [] and result.status == "completed"
    [r] = results(result.messages)
    assert r.is_error and "denied: not here" in r.content


def test_ask_pauses_with_its_reason_and_a_human_decision_runs_it() -> None:
    model = ScriptedModel([call("echo", text="hi"), "ok"])
    agent = Agent(model, tools=[echo], capabilities=[Gate(Ask("egress after untrusted data"))])
    paused = agent.run_sync("go")
    assert paused.status == "input_required"
    [p] = paused.pending_approvals
    assert p.reason == "egress after untrusted data"
    state = paused.state
    assert state is not None
    state.approve(p.call_id)
    done = agent.run_sync(state)
    assert done.status == "completed" and results(done.messages)[0].content == "hi"


def test_a_human_decision_never_overrides_a_deny() -> None:
    gate = Gate(Ask("check"))
    model = ScriptedModel([call("echo", text="hi"), "ok"])
    agent = Agent(model, tools=[echo], capabilities=[gate])
    state = agent.run_sync("go").state
    assert state is not None
    state.approve(state.pending[0].call_id)
    gate.verdict = Deny("policy changed")
    done = agent.run_sync(state)
    assert "denied: policy changed" in results(done.messages)[0].content


def test_an_approver_capability_answers_asks() -> None:
    class Approver(Capability):
        async def decide(self, run: RunContext, request: ApprovalRequest) -> Decision | None:
            return Approve({"text": "edited"})

    model = ScriptedModel([call("echo", text="hi"), "ok"])
    agent = Agent(model, tools=[echo], capabilities=[Gate(Ask("?")), Approver()])
    done = agent.run_sync("go")
    assert done.status == "completed" and results(done.messages)[0].content == "edited"


@pytest.mark.anyio
async def test_rewrite_runs_the_new_arguments_and_keeps_the_original() -> None:
    model = ScriptedModel([call("echo", text="secret"), "ok"])
    agent = Agent(model, tools=[echo], capabilities=[Gate(Rewrite({"text": "[redacted]"}))])
    stream = agent.stream("go")
    events = [e async for e in stream]
    [called] = [e for e in events if isinstance(e, ToolCalled)]
    assert (called.args, called.original_args) == ({"text": "[redacted]"}, {"text": "secret"})
    assert results(stream.result.messages)[0].content == "[redacted]"


def test_an_invalid_rewrite_is_an_observation() -> None:
    model = ScriptedModel([call("echo", text="a"), "ok"])
    agent = Agent(model, tools=[echo], capabilities=[Gate(Rewrite({"text": 5, "x": 1}))])
    done = agent.run_sync("go")
    [r] = results(done.messages)
    assert r.is_error and "a policy changed the arguments" in r.content


def test_toolsets_rewrites_and_results() -> None:
    class Toolset(Capability):
        async def tools(self, run: RunContext) -> Sequence[Tool]:
            return [_ping]

        async def before_model(self, run: RunContext, request: ModelRequest) -> ModelRequest:
            note = UserMessage(parts=(TextPart(text="[note from a capability]"),))
            return ModelRequest([*request.messages, note], request.tools, request.settings)

        async def after_tool(
            self, run: RunContext, call: ToolCall, result: ToolResultPart
        ) -> ToolResultPart:
            return ToolResultPart(
                call_id=result.call_id, name=result.name, content=result.content + " [checked]"
            )

    model = ScriptedModel([call("ping"), "ok"])
    done = Agent(model, capabilities=[Toolset()]).run_sync("go")
    assert done.status == "completed"
    assert "ping" in [t.name for t in model.requests[0].tools]
    assert "[note from a capability]" in str(model.requests[0].messages[-1])
    assert results(done.messages)[0].content == "pong [checked]"


@tool(name="ping")
def _ping() -> str:
    """Ping."""
    return "pong"


def test_a_toolset_may_not_shadow_a_tool() -> None:
    class Shadow(Capability):
        async def tools(self, run: RunContext) -> Sequence[Tool]:
            return [echo]

    done = Agent(ScriptedModel(["x"]), tools=[echo], capabilities=[Shadow()]).run_sync("go")
    assert done.status == "failed" and "already has" in (done.error or "")


@pytest.mark.parametrize(
    "hook", ["start", "before_model", "after_model", "before_tool", "after_tool", "end"]
)
def test_a_capability_that_raises_fails_the_run_cleanly(hook: str) -> None:
    class Broken(Capability):
        name = "broken"

    async def boom(*args: Any) -> None:
        raise ValueError("kaput")

    setattr(Broken, hook, boom)
    ends: list[str] = []

    class Witness(Capability):
        async def end(self, run: RunContext) -> None:
            ends.append(run.state.status)

    model = ScriptedModel([[call("echo", text="a"), call("echo", text="b")], "ok"])
    done = Agent(model, tools=[echo], capabilities=[Witness(), Broken()]).run_sync("go")
    assert done.status == "failed", hook
    assert done.error == f"capability 'broken' failed in {hook}: ValueError: kaput"
    assert ends  # the other capabilities still end
    calls = [c.id for m in done.messages if isinstance(m, AssistantMessage) for c in m.tool_calls]
    assert {r.call_id for r in results(done.messages)} == set(calls)


@pytest.mark.anyio
async def test_on_event_sees_every_event() -> None:
    seen: list[str] = []

    class Watch(Capability):
        async def on_event(self, run: RunContext, event: Event) -> None:
            seen.append(event.type)

    stream = Agent(
        ScriptedModel([call("echo", text="a"), "ok"]), tools=[echo], capabilities=[Watch()]
    ).stream("go")
    events = [e.type async for e in stream]
    assert seen == events and events[-1] == "run_finished"


def test_children_inherit_what_a_capability_hands_down() -> None:
    seen: list[tuple[str, str]] = []

    class Audit(Capability):
        def __init__(self, who: str = "top"):
            self.who = who

        async def before_tool(self, run: RunContext, call: ToolCall) -> Allow:
            seen.append((self.who, call.name))
            return Allow()

        def for_child(self, run_id: str) -> Capability:
            return Audit(f"child:{run_id.rsplit('.', 1)[-1]}")

    child = Agent(
        ScriptedModel([call("echo", text="c"), "child done"]), tools=[echo], name="helper"
    )
    parent = Agent(
        ScriptedModel([call("helper", task="do it"), "all done"]),
        tools=[child.as_tool()],
        capabilities=[Audit()],
    )
    done = parent.run_sync("go")
    assert done.status == "completed"
    [(top, name), (inner, inner_name)] = seen
    assert (top, name, inner_name) == ("top", "helper", "echo") and inner.startswith("child:")


def test_the_worked_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "capability_policy.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.splitlines() == [
        "denied  write_file(/etc/motd)",
        "ran     write_file({'path': 'reports/summary.md', 'text': '# Summary\\nAll good.'})"
        " -> wrote 19 characters to reports/summary.md",
        "completed The summary is in reports/summary.md.",
    ]


CORE_MAY_NOT_IMPORT = ("agents", "memory", "durable", "server", "cli", "policy", "mcp", "tracing")


def test_the_core_imports_nothing_above_it() -> None:
    found: list[str] = []
    for path in sorted((ROOT / "src" / "loopwise").glob("*.py")):
        if path.name == "__main__.py":  # `python -m loopwise` is the CLI's entry point
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                top = module.removeprefix("loopwise.").split(".")[0]
                if (
                    node.level == 1 or module.startswith("loopwise.")
                ) and top in CORE_MAY_NOT_IMPORT:
                    found.append(f"{path.name}: from {'.' * node.level}{module}")
    assert found == []


def test_a_verdict_of_the_wrong_type_fails_the_run_instead_of_allowing() -> None:
    ran: list[str] = []

    @tool
    def act() -> str:
        """Act."""
        ran.append("x")
        return "acted"

    done = Agent(
        ScriptedModel([call("act"), "ok"]), tools=[act], capabilities=[Gate("deny")]
    ).run_sync("go")
    assert done.status == "failed" and "returned 'deny' from before_tool" in (done.error or "")
    assert ran == []
