"""Helpers for the daily-CLI tests: the real ``loopwise`` command in a subprocess, with
its own data and config directories and test agents importable."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

AGENTS = '''
from pathlib import Path

from loopwise import Agent, tool
from loopwise.messages import TextPart, ToolResultPart
from loopwise.models.testing import FunctionModel, ScriptedModel, call

MARKER = Path(__file__).with_name("executions.log")


@tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    with MARKER.open("a") as log:
        log.write(path + "\\n")
    return f"deleted {path}"


def _parts(message, kind):
    return [p for p in getattr(message, "parts", ()) if isinstance(p, kind)]


def gate(messages, tools):
    found = _parts(messages[-1], ToolResultPart)
    if found:
        return f"done: {found[0].content}"
    return call("delete_file", path="/tmp/x")


def hear(messages, tools):
    said = [p.text for m in messages if m.role == "user" for p in _parts(m, TextPart)]
    return "heard: " + " | ".join(said)


careful = Agent(FunctionModel(gate), tools=[delete_file])
echo = Agent(FunctionModel(hear))
slow = Agent(ScriptedModel(["never"], latency=60))
'''

CLEARED_ENV = {
    "LOOPWISE_MODEL",
    "LOOPWISE_URL",
    "LOOPWISE_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "COLUMNS",
}


class Cli:
    """Runs ``python -m loopwise`` in ``cwd`` with stdin closed unless ``input`` is given."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        (cwd / "daily_agents.py").write_text(AGENTS)
        self.env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), os.getenv("PYTHONPATH")]))
        self.env["LOOPWISE_LOCAL_MODEL"] = str(cwd / "absent.gguf")
        self.env["LOOPWISE_DATA_DIR"] = str(cwd / "data")
        self.env["LOOPWISE_CONFIG_DIR"] = str(cwd / "config")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "loopwise", *args]

    def __call__(
        self, *args: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env={**self.env, **env},
            cwd=self.cwd,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def database(self) -> Path:
        return self.cwd / "data" / "loopwise.sqlite"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.database) as conn:
            return list(conn.execute(sql, params))

    def executions(self) -> list[str]:
        marker = self.cwd / "executions.log"
        return marker.read_text().splitlines() if marker.exists() else []


def agent(name: str) -> str:
    return f"--agent=daily_agents:{name}"


def run_id_of(done: subprocess.CompletedProcess[str]) -> str:
    """The run id the live view names on its first line."""
    for line in done.stderr.splitlines():
        if line.startswith("run run_"):
            return line.split()[1]
    raise AssertionError(f"no run id in: {done.stderr}")


def one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) >= 1
    return lines[-1]
