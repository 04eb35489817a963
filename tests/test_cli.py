"""The ``loopwise`` command, run for real in a subprocess against agents with test models."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from loopwise.cli.display import LiveDisplay
from loopwise.events import (
    ApprovalRequested,
    BudgetWarning,
    ContextCompacted,
    Event,
    LoopDetected,
    MemoryRecalled,
    ModelRequested,
    ModelResponded,
    ModelText,
    OutputRetry,
    PolicyDecision,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCalled,
    ToolProgress,
    ToolResulted,
)
from loopwise.messages import Usage

AGENTS = '''
from pydantic import BaseModel

from loopwise import Agent, tool
from loopwise.models.testing import FunctionModel, ScriptedModel, call


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode() -> str:
    """Always fails."""
    raise RuntimeError("the tool broke " + "x" * 500)


@tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


class Point(BaseModel):
    x: int
    y: int


adder = Agent(
    ScriptedModel([["I will add the numbers.", call("add", a=2, b=3)], "The sum is 5."]),
    tools=[add],
)
failing_tool = Agent(ScriptedModel([call("explode"), "It broke."]), tools=[explode])
out_of_turns = Agent(ScriptedModel([]))
busy = Agent(FunctionModel(lambda m, t: call("add", a=len(m), b=1)), tools=[add])
careful = Agent(ScriptedModel([call("delete_file", path="/tmp/x")]), tools=[delete_file])
structured = Agent(ScriptedModel([call("final_answer", x=1, y=2)]), output_type=Point)
slow = Agent(ScriptedModel(["never"], latency=60))
not_an_agent = 42
'''


CLEARED_ENV = {
    "LOOPWISE_MODEL",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "COLUMNS",
}


class Cli:
    """Runs ``python -m loopwise`` with the test agents importable and no model configured."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), os.getenv("PYTHONPATH")]))
        # No embedded model either, even where loopwise[local] is installed.
        self.env["LOOPWISE_LOCAL_MODEL"] = str(cwd / "absent.gguf")
        # Runs are recorded in this test's own store; no user config file is read.
        self.env["LOOPWISE_DATA_DIR"] = str(cwd / "data")
        self.env["LOOPWISE_CONFIG_DIR"] = str(cwd / "config")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "loopwise", *args]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    (tmp_path / "tests_cli_agents.py").write_text(AGENTS)
    return Cli(tmp_path)


def agent(name: str) -> str:
    return f"--agent=tests_cli_agents:{name}"


def test_completed_prints_answer_and_shows_the_work_on_stderr(cli: Cli) -> None:
    done = cli("run", "What is 2 + 3?", agent("adder"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "The sum is 5.\n"
    err = done.stderr
    assert "\x1b[" not in err  # not a terminal: plain text
    assert "step 1" in err and "step 2" in err
    assert "I will add the numbers." in err
    assert '→ add({"a":2,"b":3})' in err
    assert "← add result: 5" in err
    assert "tokens so far" in err and "total" in err
    assert "$0" not in err  # a free model shows no cost
    assert "completed" in err


def test_json_prints_one_summary_object_and_no_live_view(cli: Cli) -> None:
    done = cli("run", "What is 2 + 3?", agent("adder"), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # the whole stdout is one JSON value
    assert isinstance(summary, dict)
    assert summary["status"] == "completed"
    assert summary["output"] == "The sum is 5."
    assert summary["steps"] == 2 and summary["tool_calls"] == 1
    assert summary["stop_reason"] is None
    assert summary["usage"]["input_tokens"] > 0
    assert {"cost_usd", "duration", "run_id", "model"} <= summary.keys()
    assert "step 1" not in done.stderr


def test_json_with_verbose_keeps_the_live_view(cli: Cli) -> None:
    done = cli("run", "What is 2 + 3?", agent("adder"), "--json", "--verbose")
    assert json.loads(done.stdout)["status"] == "completed"
    assert "step 1" in done.stderr


def test_tool_error_is_shown_shortened(cli: Cli) -> None:
    done = cli("run", "go", agent("failing_tool"))
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if "← explode error" in x)
    assert "the tool broke" in line and len(line) < 260


def test_structured_output_is_printed_as_json(cli: Cli) -> None:
    done = cli("run", "a point", agent("structured"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"x": 1, "y": 2}


def test_failed_run_exits_1_with_one_line_error(cli: Cli) -> None:
    done = cli("run", "hi", agent("out_of_turns"))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1].startswith("error: ScriptedModel ran out of turns")


def test_no_model_configured_exits_2(cli: Cli) -> None:
    done = cli("run", "hi")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "LOOPWISE_MODEL" in done.stderr and "--model" in done.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests_cli_agents:not_an_agent", "is a int, not a loopwise Agent"),
        ("tests_cli_agents:missing", "has no attribute 'missing'"),
        ("no_such_module_here:agent", "there is no module 'no_such_module_here'"),
        ("tests_cli_agents", "is not of the form module:attribute"),
    ],
)
def test_bad_agent_exits_2(cli: Cli, spec: str, message: str) -> None:
    done = cli("run", "hi", f"--agent={spec}")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr


def test_bad_flags_exit_2(cli: Cli) -> None:
    assert cli("run", "hi", agent("adder"), "--max-steps", "0").returncode == 2
    assert cli("run", "hi", agent("adder"), "--model", "nonsense").returncode == 2
    assert cli("run").returncode == 2


def test_max_steps_stop_exits_3(cli: Cli) -> None:
    done = cli("run", "count", agent("busy"), "--max-steps", "1")
    assert done.returncode == 3
    assert "incomplete: stopped by max_steps" in done.stderr.splitlines()[-1]


def test_token_budget_stop_exits_3(cli: Cli) -> None:
    done = cli("run", "count", agent("busy"), "--budget-tokens", "50", "--json")
    assert done.returncode == 3
    summary = json.loads(done.stdout)
    assert (summary["status"], summary["stop_reason"], summary["steps"]) == (
        "incomplete",
        "budget",
        0,
    )


def test_timeout_stop_exits_3(cli: Cli) -> None:
    done = cli("run", "wait", agent("slow"), "--timeout", "0.2")
    assert done.returncode == 3
    assert done.stderr.splitlines()[-1].startswith("incomplete: stopped by timeout")


def test_approval_needed_exits_4_naming_the_call(cli: Cli) -> None:
    done = cli("run", "clean up", agent("careful"))
    assert done.returncode == 4
    assert "approval needed for delete_file" in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("input required: approval is needed for call_0_0 (delete_file); ")
    assert "loopwise approve run_" in last and "loopwise resume run_" in last


def test_interrupt_exits_130(cli: Cli) -> None:
    proc = subprocess.Popen(
        cli.argv("run", "wait", agent("slow")),
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the model is called right after "step 1" is shown
            if "step 1" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines()[-1] == "interrupted"


def test_version(cli: Cli) -> None:
    done = cli("version")
    assert done.returncode == 0 and done.stdout.strip()


EVENTS: list[Event] = [
    RunStarted(run_id="r", step=0, agent="helper", model="test:scripted", input="task [x]"),
    ModelRequested(run_id="r", step=1, messages=2, estimated_input_tokens=10, max_tokens=100),
    ToolProgress(run_id="r", step=1, call_id="c0", name="crawl", progress=3, total=10),
    TextDelta(run_id="r", step=1, text=""),
    TextDelta(run_id="r", step=1, text="Let me "),
    TextDelta(run_id="r", step=1, text="[bold]think[/bold]."),
    ModelResponded(
        run_id="r",
        step=1,
        usage=Usage(requests=1, input_tokens=10, output_tokens=5),
        total_usage=Usage(requests=1, input_tokens=10, output_tokens=5),
        cost_usd=0.00123,
        total_cost_usd=0.00123,
        finish_reason="tool_calls",
        duration=0.1,
    ),
    BudgetWarning(run_id="r", step=1, limit="max_usd", used=0.8, maximum=1.0),
    ModelText(run_id="r", step=1, text="Let me [bold]think[/bold].", final=False),
    ToolCalled(run_id="r", step=1, call_id="c1", name="search", args={"q": "cats"}),
    ToolResulted(
        run_id="r",
        step=1,
        call_id="c1",
        name="search",
        content="ok\n" * 300,
        is_error=False,
        duration=0.2,
    ),
    ToolResulted(
        run_id="r", step=1, call_id="c2", name="fetch", content="boom", is_error=True, duration=0.1
    ),
    LoopDetected(run_id="r", step=1, kind="repeated_call", detail="search 3 times", action="nudge"),
    ContextCompacted(
        run_id="r", step=1, strategy="summarise", tokens_before=9000, tokens_after=2000
    ),
    OutputRetry(run_id="r", step=2, error="not JSON", attempt=1),
    MemoryRecalled(run_id="r", step=0, ids=["mem_1", "mem_2"], untrusted=1),
    MemoryRecalled(run_id="r", step=0, ids=[]),
    ModelText(run_id="r", step=2, text="An unstreamed thought.", final=False),
    ModelText(run_id="r", step=2, text="The final answer.", final=True),
    ApprovalRequested(run_id="r", step=2, call_id="c3", name="delete", args={"path": "/"}),
    PolicyDecision(
        run_id="r",
        step=2,
        call_id="c4",
        name="send_email",
        action="deny",
        rule="no-egress-after-untrusted",
        reason="the run read untrusted web content",
        taint=["http_get"],
    ),
    RunFinished(
        run_id="r",
        step=2,
        status="input_required",
        stop_reason="approval_required",
        output=None,
        error=None,
        usage=Usage(requests=2, input_tokens=20, output_tokens=10),
        cost_usd=0.002,
        steps=2,
        duration=1.5,
    ),
]


def test_live_display_handles_every_event_type() -> None:
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, width=100, highlight=False, soft_wrap=True))
    event_types = set(Event.__args__)
    assert {type(e) for e in EVENTS} == event_types
    for event in EVENTS:
        display.handle(event)
    text = out.getvalue()
    assert "step 1" in text
    assert "  Let me [bold]think[/bold].\n" in text  # streamed, not parsed as markup
    assert text.count("think") == 1  # the streamed thought is not repeated
    assert "An unstreamed thought." in text
    assert "\n  \n" not in text  # an empty delta starts no line
    assert "The final answer." not in text  # the answer goes to stdout, not the live view
    assert '→ search({"q":"cats"})' in text
    assert "← fetch error: boom" in text
    observation = next(x for x in text.splitlines() if "← search" in x)
    assert len(observation) < 240
    assert "tokens so far 10 in / 5 out · $0.0012" in text
    for piece in (
        "budget warning: max_usd",
        "memory: 2 recalled (mem_1, mem_2, 1 untrusted)",
        "loop detected",
        "context compacted",
        "answer rejected",
        "approval needed for delete",
        "policy deny send_email [no-egress-after-untrusted]: the run read untrusted web "
        "content (untrusted input: http_get)",
        "input_required",
        "… crawl 3/10",
    ):
        assert piece in text


def test_base_url_points_an_openai_wire_model_at_a_server(cli: Cli) -> None:
    from wire_servers import Reply, ToolCall, WireServer

    cli.env.pop("OPENAI_BASE_URL", None)
    cli.env["OPENAI_API_KEY"] = "sk-test"
    cli.env["LOOPWISE_TOOL_MODE"] = "native"
    with WireServer() as server:
        server.push(
            Reply(tool_calls=(ToolCall("add", {"a": 2, "b": 3}),)), Reply(text="The sum is 5.")
        )
        done = cli(
            "run",
            "Add 2 and 3.",
            "--model",
            "openai-compatible:served-model",
            "--base-url",
            server.openai_url,
            agent("adder"),
        )
        bodies = server.bodies
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "The sum is 5."
    assert [b["model"] for b in bodies] == ["served-model", "served-model"]
    assert any(m.get("role") == "tool" and m["content"] == "5" for m in bodies[1]["messages"])


def test_base_url_needs_a_model_and_an_openai_wire_provider(cli: Cli) -> None:
    done = cli("run", "hi", "--base-url", "http://127.0.0.1:9/v1")
    assert done.returncode == 2 and "--base-url needs --model" in done.stderr
    done = cli("run", "hi", "--model", "anthropic:claude-x", "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 2 and "applies to OpenAI-wire providers" in done.stderr
