"""The live view on a real terminal (a pseudo-terminal): the spinner while the model
thinks, running totals, the answer as Markdown, a diff before an overwrite is approved."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from cli_daily_support import Cli

AGENTS = """
import os

from loopwise import Agent
from loopwise.models.testing import ScriptedModel, call

ANSWER = "**Bold** answer\\n\\n- item one\\n- item two"
thinker = Agent(ScriptedModel([ANSWER], latency=1.2))
quick = Agent(ScriptedModel([ANSWER]))
NEW = "new line\\n"
HOSTILE = "\\x1b]52;c;AAAA\\x07 \\x1b[2J"
overwriter = Agent(ScriptedModel([call("write_file", path="notes.txt", content=NEW), "ok"]))
hostile_overwrite = Agent(
    ScriptedModel([call("write_file", path="notes.txt", content=HOSTILE), "ok"])
)
ESCAPES = {
    name: Agent(ScriptedModel([call("write_file", path=path, content="x\\n"), "ok"]))
    for name, path in [
        ("link", "link.txt"),
        ("up", "../secret.txt"),
        ("absolute", os.environ.get("SECRET_PATH", "/nonexistent")),
        ("dirlink", "dirlink/secret.txt"),
        ("dotdot", "sub/../../secret.txt"),
    ]
}
globals().update({f"escape_{name}": a for name, a in ESCAPES.items()})
"""


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    made = Cli(tmp_path)
    (tmp_path / "live_agents.py").write_text(AGENTS)
    return made


def on_a_terminal(cli: Cli, *args: str, answers: str = "", timeout: float = 30) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; type ``answers``."""
    main, child = pty.openpty()
    env = {**cli.env, "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen(
        cli.argv(*args), stdin=child, stdout=child, stderr=child, env=env, cwd=cli.cwd
    )
    os.close(child)
    data = b""
    typed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        if answers and not typed and b"> " in data:
            os.write(main, answers.encode())
            typed = True
    os.close(main)
    return proc.wait(timeout=10), data.decode("utf-8", "replace").replace("\r\n", "\n")


def plain(text: str) -> str:
    return re.sub("\x1b\\[[0-9;]*m", "", text)


def test_spinner_while_thinking_and_markdown_answer(cli: Cli) -> None:
    code, text = on_a_terminal(cli, "run", "go", "--agent=live_agents:thinker")
    assert code == 0, text
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] thinking \d\.\ds", text), text
    assert "\r\x1b[2K" in text  # the spinner clears its own line
    shown = plain(text)
    answer = shown[shown.rindex("completed") :]  # stdout, after the live view
    assert "Bold answer" in answer and "**" not in answer  # rendered as Markdown
    assert "• item one" in answer
    assert "tokens so far" in shown and "total" in shown and "$0" not in shown


def test_no_spinner_for_a_quick_reply_and_plain_answer_when_piped(cli: Cli) -> None:
    code, text = on_a_terminal(cli, "run", "go", "--agent=live_agents:quick")
    assert code == 0 and "thinking" not in text and "\x1b[2K" not in text
    piped = cli("run", "go", "--agent=live_agents:quick")
    assert piped.stdout == "**Bold** answer\n\n- item one\n- item two\n"
    assert "thinking" not in piped.stderr and "\x1b" not in piped.stderr


def test_stop_reason_said_once(cli: Cli) -> None:
    done = cli("run", "go", "--agent=live_agents:overwriter", "--max-steps", "1", "--approve=no")
    assert done.returncode == 3
    assert "incomplete (" not in done.stderr  # the last line says why, once
    assert done.stderr.count("stopped by") == 1, done.stderr


def test_diff_shown_before_approving_an_overwrite(cli: Cli) -> None:
    workspace = cli.cwd / "ws"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("old line\n")
    code, text = on_a_terminal(
        cli,
        "run", "go", "--agent=live_agents:overwriter", "--tools", "files",
        "--workspace", str(workspace),
        answers="n\n",
    )  # fmt: skip
    shown = plain(text)
    assert code == 0, shown
    diff_at = shown.index("-old line")
    assert shown.index("+new line") > diff_at
    assert shown.index("approval needed: write_file") > diff_at
    assert (workspace / "notes.txt").read_text() == "old line\n"  # denied


def test_diff_of_hostile_content_is_escaped(cli: Cli) -> None:
    workspace = cli.cwd / "ws"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("old\n")
    outside = cli.cwd / "secret.txt"
    outside.write_text("TOP SECRET\n")
    (workspace / "link.txt").symlink_to(outside)
    code, text = on_a_terminal(
        cli,
        "run", "go", "--agent=live_agents:hostile_overwrite", "--tools", "files",
        "--workspace", str(workspace),
        answers="n\n",
    )  # fmt: skip
    shown = plain(text)
    assert code == 0, shown
    assert "\x1b]52" not in text and "\x1b[2J" not in text and "\x07" not in text
    assert "+\\x1b]52;c;AAAA\\x07" in shown
    assert "TOP SECRET" not in shown


@pytest.mark.parametrize("name", ["link", "up", "absolute", "dirlink", "dotdot"])
def test_no_diff_of_a_file_outside_the_workspace(cli: Cli, name: str) -> None:
    """The diff reads the file as the tool would: never through a link or out of the
    workspace (class 1/15)."""
    workspace = cli.cwd / "ws"
    (workspace / "sub").mkdir(parents=True)
    outside = cli.cwd / "secret.txt"
    outside.write_text("TOP SECRET\n")
    (workspace / "link.txt").symlink_to(outside)
    (workspace / "dirlink").symlink_to(cli.cwd)
    cli.env["SECRET_PATH"] = str(outside)
    code, text = on_a_terminal(
        cli,
        "run", "go", f"--agent=live_agents:escape_{name}", "--tools", "files",
        "--workspace", str(workspace), "--approve", "ask",
        answers="n\n",
    )  # fmt: skip
    assert code == 0 and "step 2" in text, text  # the run went on past the call
    assert "TOP SECRET" not in text, text
    assert outside.read_text() == "TOP SECRET\n"
