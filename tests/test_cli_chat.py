"""``loopwise chat`` on a pseudo-terminal: turns continue the conversation, commands,
multi-line input, inline approval, Ctrl-C cancels the turn and not the session."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli_daily_support import Cli

AGENTS = '''
import asyncio

from loopwise import Agent, tool
from loopwise.messages import TextPart, ToolResultPart
from loopwise.models.testing import FunctionModel, call


@tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


def _parts(message, kind):
    return [p for p in getattr(message, "parts", ()) if isinstance(p, kind)]


async def chatty(messages, tools):
    results = _parts(messages[-1], ToolResultPart)
    if results:
        return f"tool said: {results[0].content}"
    said = [p.text for m in messages if m.role == "user" for p in _parts(m, TextPart)]
    if "slow" in said[-1]:
        await asyncio.sleep(60)
    if "delete" in said[-1]:
        return call("delete_file", path="/tmp/x")
    return "heard: " + " / ".join(s.replace(chr(10), " NL ") for s in said)


chatter = Agent(FunctionModel(chatty), tools=[delete_file])
'''


class Terminal:
    """A process on a pseudo-terminal, driven like ``expect``."""

    def __init__(self, cli: Cli, *args: str):
        self.main, child = pty.openpty()
        env = {**cli.env, "TERM": "dumb", "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            cli.argv(*args), stdin=child, stdout=child, stderr=child, env=env, cwd=cli.cwd
        )
        os.close(child)
        self.seen = ""
        self.pos = 0

    def expect(self, pattern: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.seen, self.pos)
            if found:
                self.pos = found.end()
                return found.group(0)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen in:\n{self.seen[-3000:]}")
            ready, _, _ = select.select([self.main], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.main, 65536)
                except OSError:
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"exited before {pattern!r}:\n{self.seen[-3000:]}")
                self.seen += re.sub("\x1b\\[[0-9;?]*[A-Za-z]", "", chunk.decode("utf-8", "replace"))

    def send(self, text: str) -> None:
        os.write(self.main, text.encode())

    def close(self) -> int:
        code = self.proc.wait(timeout=20)
        os.close(self.main)
        return code


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    made = Cli(tmp_path)
    (tmp_path / "chat_agents.py").write_text(AGENTS)
    return made


@pytest.mark.slow
def test_a_chat_session(cli: Cli) -> None:
    term = Terminal(cli, "chat", "--agent=chat_agents:chatter")
    term.expect("you> ")
    term.send("hello\n")
    term.expect("heard: hello")
    term.expect("you> ")
    term.send("/tools\n")
    term.expect("delete_file +Delete a file")
    term.send("/model\n")
    term.expect("model: ")
    term.send("line one\\\n")
    term.expect(r"\.\.\. ")
    term.send("line two\n")
    term.expect("heard: hello / line one NL line two")
    term.send('"""\n')
    term.send("block a\n")
    term.send("block b\n")
    term.send('"""\n')
    term.expect("/ block a NL block b")
    term.expect("you> ")
    term.send("slow please\n")
    term.expect("step 1")
    time.sleep(0.5)
    term.proc.send_signal(signal.SIGINT)  # Ctrl-C on the terminal
    term.expect("interrupted")
    term.expect("you> ")
    term.send("after\n")
    answer = term.expect("heard: [^\n]*after")
    assert "slow" not in answer  # the cancelled turn is not part of the conversation
    term.send("delete it\n")
    term.expect("approval needed: delete_file")
    term.send("y\n")
    term.expect("tool said: deleted /tmp/x")
    term.send("/budget\n")
    term.expect("this session: 6 turns")
    term.expect("you> ")
    term.send("\x04")  # Ctrl-D
    assert term.close() == 0
    listed = json.loads(cli("runs", "list", "--json").stdout)["data"]
    statuses = sorted(r["status"] for r in listed)
    assert statuses.count("completed") == 5 and statuses.count("cancelled") == 1, statuses


def test_chat_needs_a_terminal(cli: Cli) -> None:
    done = cli("chat", "--agent=chat_agents:chatter", input="hello\n")
    assert done.returncode == 2 and "needs a terminal" in done.stderr
