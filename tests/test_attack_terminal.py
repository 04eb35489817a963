"""Terminal output (class 19): escape sequences from tool output, model text, answers and
errors are escaped before the ``loopwise`` command prints them, in a pipe and on a tty."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from figures import figure
from loopwise.cli.display import SafeStream, json_safe, printable

HOSTILE = [
    "\x1b[2J\x1b[H",  # clear the screen, cursor home
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",  # OSC 52: write the clipboard
    "\x1b]0;pwned\x07",  # window title
    "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\",  # OSC 8 link
    "\x1b[10A\x1b[1;1H\x1b[K",  # cursor up, cursor position, erase line
    "\x1bP1$r0m\x1b\\",  # DCS
    "\x1b[8mhidden\x1b[0m",  # SGR conceal
    "\x9b2J\x9d0;c1 title\x9c",  # C1 CSI and OSC
    "\u202eevil.exe\u202c txt.\u2066x\u2069",  # bidi override and isolate
    "\x07\x08\x08\x08ok\rOVERWRITE\x7f\x00",  # bell, backspace, carriage return, DEL, NUL
    "[bold red]markup[/] [link=https://evil.example]link[/link] :warning:",  # rich markup
]
PAYLOAD = "<" + "|".join(HOSTILE) + ">"
MARKUP = "[link=https://evil.example]link[/link]"

AGENTS = f"""
from loopwise import Agent, tool
from loopwise.models.testing import FunctionModel, ScriptedModel, call

PAYLOAD = {PAYLOAD!r}


@tool
def echo() -> str:
    \"\"\"Returns hostile text.\"\"\"
    return "tool says " + PAYLOAD


@tool
def broken() -> str:
    \"\"\"Fails with hostile text.\"\"\"
    raise RuntimeError("tool failed " + PAYLOAD)


@tool(requires_approval=True)
def delete(path: str) -> str:
    \"\"\"Deletes a path.\"\"\"
    return "deleted"


def crash(messages, tools):
    raise RuntimeError("model failed " + PAYLOAD)


hostile = Agent(
    ScriptedModel(
        [
            ["model says " + PAYLOAD, call("echo"), call("broken")],
            [call("delete", path="x" + PAYLOAD)],
            "answer " + PAYLOAD,
        ]
    ),
    tools=[echo, broken, delete],
)
plain = Agent(ScriptedModel(["only text " + PAYLOAD]))
failing = Agent(FunctionModel(crash))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "hostile_agents.py").write_text(AGENTS)
    return tmp_path


def env_for(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPWISE_MODEL", "COLUMNS")}
    env["PYTHONPATH"] = str(cwd)
    env["LOOPWISE_DATA_DIR"] = str(cwd / "data")
    env["LOOPWISE_LOCAL_MODEL"] = str(cwd / "absent.gguf")
    return env


def run_cli(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "loopwise", "run", "go", *args]
    return subprocess.run(
        argv, input=stdin.encode(), env=env_for(cwd), cwd=cwd, capture_output=True, timeout=60
    )


UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def unsafe(data: bytes) -> list[str]:
    """The control characters and bidi overrides in ``data`` (decoded as UTF-8)."""
    return UNSAFE.findall(data.decode("utf-8", "replace"))


def test_hostile_text_is_escaped_by_the_real_cli(project: Path) -> None:
    runs = {
        "asked": run_cli(project, "--agent=hostile_agents:hostile", "--approve=ask", stdin="y\n"),
        "json": run_cli(project, "--agent=hostile_agents:hostile", "--approve=yes", "--json"),
        "waiting": run_cli(project, "--agent=hostile_agents:hostile"),
        "plain": run_cli(project, "--agent=hostile_agents:plain", "--verbose", "--json"),
        "failed": run_cli(project, "--agent=hostile_agents:failing"),
    }
    for name, done in runs.items():
        print(f"--- {name} ({done.returncode})\n{done.stdout.decode()}\n{done.stderr.decode()}")
        assert unsafe(done.stdout) == [] and unsafe(done.stderr) == [], name
    asked, as_json = runs["asked"], runs["json"]
    assert asked.returncode == 0 and runs["failed"].returncode == 1
    err = asked.stderr.decode()
    for seen in ("model says <", "tool says <", "tool failed <", "approval needed: delete"):
        assert seen in err
    assert "\\x1b]52;c;" in err and "\\u202e" in err  # escaped visibly, not dropped
    assert MARKUP in err  # rich markup printed as text
    assert asked.stdout.decode() == printable("answer " + PAYLOAD) + "\n"
    summary = json.loads(as_json.stdout)
    assert summary["output"] == "answer " + PAYLOAD  # the JSON still holds the exact text
    assert "model failed <" in runs["failed"].stderr.decode()
    assert json.loads(runs["plain"].stdout)["output"] == "only text " + PAYLOAD
    figure(
        f"terminal escapes: {len(HOSTILE)} hostile sequences x 6 channels (tool output, tool "
        f"error, model text, approval prompt, answer, run error) in {len(runs)} CLI runs, "
        "raw control characters printed: 0"
    )


def test_on_a_terminal_only_rich_styles_pass(project: Path) -> None:
    main, child = pty.openpty()
    argv = [sys.executable, "-m", "loopwise", "run", "go", "--agent=hostile_agents:hostile"]
    with subprocess.Popen(
        [*argv, "--approve=yes"],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env={**env_for(project), "TERM": "xterm-256color", "COLUMNS": "200"},
        cwd=project,
    ) as proc:
        os.close(child)
        data = b""
        while True:
            ready, _, _ = select.select([main], [], [], 30)
            try:
                chunk = os.read(main, 65536) if ready else b""
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                break
            data += chunk
        os.close(main)
        assert proc.wait(timeout=30) == 0
    text = data.decode("utf-8", "replace")
    styles = re.findall("\x1b\\[[0-9;]*m", text)
    assert styles, "rich styles the live view on a terminal"
    rest = re.sub("\x1b\\[[0-9;]*m", "", text).replace("\r\n", "\n")
    assert unsafe(rest.encode()) == [], [c for c in unsafe(rest.encode())][:10]
    assert "\x1b[8m" not in styles and "\\x1b[8mhidden" in rest  # hostile SGR escaped too
    assert "tool says <" in rest and MARKUP in rest


def test_safe_stream_and_helpers() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    piped, tty = io.StringIO(), Tty()
    for raw in (piped, tty):
        stream = SafeStream(raw)
        stream.write("\x1b[1mbold\x1b[0m " + PAYLOAD)
    assert unsafe(piped.getvalue().encode()) == []
    kept = tty.getvalue()
    assert kept.startswith("\x1b[1mbold\x1b[0m <")  # rich's styles pass on a terminal
    assert unsafe(re.sub("\x1b\\[[0-9;]*m", "", kept).encode()) == []
    assert "\x1b[2J" not in kept and "\x1b]" not in kept
    assert printable("a\x1bb\tc\nd\x9be\u202e") == "a\\x1bb\tc\nd\\x9be\\u202e"
    doc = json.dumps({"t": PAYLOAD}, ensure_ascii=False)
    assert json.loads(json_safe(doc)) == {"t": PAYLOAD} and unsafe(json_safe(doc).encode()) == []
