"""``loopwise run --mcp/--mcp-config`` and ``loopwise mcp tools``, run for real in a
subprocess against server-everything and the hostile fixture server."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_support import EVERYTHING, FIXTURE, PYTHON, need, node

AGENTS = """
from loopwise import Agent
from loopwise.models.testing import ScriptedModel, call

echoer = Agent(ScriptedModel([call("server-everything_echo", message="hi"), "echoed"]))
configured = Agent(ScriptedModel([call("ev_get-sum", a=1, b=2), "summed"]))
"""


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPWISE_MODEL", "COLUMNS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), os.getenv("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "loopwise", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "mcp_cli_agents.py").write_text(AGENTS)
    return tmp_path


def everything_command() -> str:
    need(EVERYTHING)
    return shlex.join([node(), str(EVERYTHING), "stdio"])


def test_run_with_mcp_flag(work: Path) -> None:
    done = cli(work, "run", "go", "--agent=mcp_cli_agents:echoer", "--json", "-v",
               "--mcp", everything_command())  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == "echoed"
    assert "Echo: hi" in done.stderr  # the live view shows the MCP result


def test_run_with_mcp_config(work: Path) -> None:
    need(EVERYTHING)
    config = {"mcpServers": {"ev": {"command": node(), "args": [str(EVERYTHING), "stdio"]}}}
    (work / "mcp.json").write_text(json.dumps(config))
    done = cli(work, "run", "go", "--agent=mcp_cli_agents:configured", "--json",
               "--mcp-config", "mcp.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == "summed"


def test_mcp_tools_lists_what_the_agent_gets(work: Path) -> None:
    done = cli(work, "mcp", "tools", everything_command(), "--json")
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)
    tools = {t["name"]: t for t in report["tools"]}
    assert tools["server-everything_echo"]["effects"] == ["read"]
    assert not tools["server-everything_echo"]["asks"]


def test_mcp_tools_escapes_what_a_hostile_server_says(work: Path) -> None:
    done = cli(work, "mcp", "tools", shlex.join([PYTHON, str(FIXTURE)]))
    assert done.returncode == 0, done.stderr
    assert "asks first" in done.stdout and "left out 'remote_ref'" in done.stdout
    assert "\x1b" not in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["mcp", "tools", "no-such-mcp-server-xyz"], 1, "was not found"),
        (["mcp", "tools", "missing.json"], 2, "does not exist"),
        (["mcp", "tools", "npx 'unclosed"], 2, "could not be split"),
        (["run", "go", "--agent=mcp_cli_agents:echoer", "--mcp", "no-such-mcp-server-xyz"],
         1, "was not found"),
        (["run", "go", "--agent=mcp_cli_agents:echoer", "--mcp", "x y", "--mcp", "x z"],
         2, "both named 'x'"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_sentence(work: Path, args: list[str], code: int, expected: str) -> None:
    done = cli(work, *args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert expected in done.stderr and "Traceback" not in done.stderr
