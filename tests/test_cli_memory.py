"""Memory from the CLI: ``run --memory`` (off by default), ``memory add``, ``memory search -``
with one embedder load, escaped output. The hash embedder keeps it fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cli_daily_support import Cli, agent
from figures import figure


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    made = Cli(tmp_path)
    made.env["LOOPWISE_MEMORY_EMBEDDER"] = "hash:256"
    return made


def memories(cli: Cli) -> list[dict[str, object]]:
    done = cli("memory", "list", "--json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_memory_is_opt_in_for_cli_runs(cli: Cli) -> None:
    added = cli("memory", "add", "The deploy key lives in the vault named orion.")
    assert added.returncode == 0 and added.stdout.startswith("remembered "), added.stderr
    plain = cli("run", "where is the deploy key?", agent("echo"))
    assert plain.returncode == 0 and "orion" not in plain.stdout
    assert len(memories(cli)) == 1  # the run left no memory
    recalled = cli("run", "where is the deploy key?", agent("echo"), "--memory")
    assert recalled.returncode == 0, recalled.stderr
    assert "orion" in recalled.stdout and "memory: 1 recalled" in recalled.stderr
    kinds = sorted(str(m["kind"]) for m in memories(cli))
    assert kinds == ["fact", "run"]  # and this one stored its summary


def test_memory_search_reads_many_queries_with_one_load(cli: Cli) -> None:
    cli("memory", "add", "Paris is the capital of France.")
    cli("memory", "add", "The build uses uv and ruff.")
    started = time.monotonic()
    done = cli("memory", "search", "-", "--agent", "default", input="capital of France\nruff\n")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "# capital of France" and "Paris" in lines[1]
    assert "# ruff" in lines and "uv and ruff" in done.stdout
    figure(f"CLI memory search: 2 queries in one process (hash embedder) {took:.1f}s")


@pytest.mark.parametrize(
    "hostile", ["\x1b]52;c;QUFBQQ==\x07", "\x1b[2J\x1b[H", "\x9b31m", "\u202egnp.exe", "\x07\x08"]
)
def test_memory_output_is_escaped(cli: Cli, hostile: str) -> None:
    assert cli("memory", "add", f"note {hostile} end").returncode == 0
    for args in (("memory", "list"), ("memory", "list", "--json")):
        out = cli(*args).stdout
        assert hostile not in out and "note" in out
        assert not any(c in out for c in "\x1b\x07\x08\x9b\u202e")


def test_memory_add_refuses_empty(cli: Cli) -> None:
    done = cli("memory", "add", "-", input="  \n")
    assert done.returncode == 2 and "empty" in done.stderr


def test_on_a_terminal_stored_text_cannot_style_the_screen(cli: Cli) -> None:
    """A terminal lets colour codes through (rich's own); text from memories and runs is
    escaped before that, so hidden-text and colour codes in it show as text."""
    from test_cli_live import on_a_terminal

    payloads = ["\x1b[8m", "\x1b[30;40m", "\x1b[0m\x1b[2m"]
    for payload in payloads:
        cli("memory", "add", f"remember {payload}hidden")
    code, text = on_a_terminal(cli, "memory", "list")
    assert code == 0 and "hidden" in text
    assert not any(p in text for p in payloads), text
    done = cli("run", "x\x1b[8mhidden", agent("echo"))
    run_id = done.stderr.split()[1]
    for args in (("runs", "show", run_id), ("runs", "events", run_id), ("runs", "list")):
        code, text = on_a_terminal(cli, *args)
        assert code == 0 and "\x1b[8m" not in text, (args, text)
    figure(f"CLI stored text on a terminal: {len(payloads) + 3} SGR channels, raw codes 0")
