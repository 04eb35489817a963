"""Attacks on the built-in tools: approval gates, secrets in what tools show, deep or huge
trees, and regular expressions that backtrack (classes 17, 18, 20 and 21)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import Agent, Approve, ModelRetry, Reject, Tool, ToolContext
from loopwise.cli.toolsets import build_tools, parse_tool_specs
from loopwise.models.testing import ScriptedModel, call
from loopwise.sandbox import Limits, SandboxResult
from loopwise.toolkits.code import python, shell
from loopwise.toolkits.files import files
from loopwise.toolkits.system import system


@pytest.fixture(autouse=True)
def _wipe_deep_trees(tmp_path: Path) -> Iterator[None]:
    """Deep trees outlive pytest's recursive clean-up of old temp folders: rm walks any
    depth."""
    yield
    subprocess.run(["rm", "-rf", "--", str(tmp_path)], check=False)


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


def direct(t: Tool, *, approved: bool = False, **args: Any) -> Any:
    """Call a tool's function as the loop would, with or without a human approval."""
    kwargs = t.validate(args)
    if t.context_param:
        kwargs[t.context_param] = ToolContext("run", "call", t.name, 1, None, approved=approved)
    result = t.function(**kwargs)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


# --- class 17: approval gates ------------------------------------------------------------

CHANGES = [  # (tool, args): each changes or deletes the existing app.py
    ("append_file", {"path": "app.py", "content": "evil()\n"}),
    ("append_file", {"path": "./app.py", "content": "evil()\n"}),
    ("append_file", {"path": "src/../app.py", "content": "evil()\n"}),
    ("append_file", {"path": "link_to_app", "content": "evil()\n"}),
    ("append_file", {"path": "{ws}/app.py", "content": "evil()\n"}),
    ("append_file", {"path": "app.py", "content": ""}),
    ("write_file", {"path": "app.py", "content": "gone"}),
    ("delete_file", {"path": "app.py"}),
    ("run_shell", {"command": "rm app.py"}),
    ("run_shell", {"command": "echo evil >> app.py"}),
    ("run_shell", {"command": ": > app.py"}),
    ("run_python", {"code": "import os; os.remove('app.py')"}),
    ("run_python", {"code": "open('app.py', 'a').write('evil()')"}),
]
AGENT = """
from loopwise import Agent
from loopwise.models.testing import ScriptedModel, call

CHANGES = {changes!r}
changer = Agent(ScriptedModel([[call(name, **args) for name, args in CHANGES], "Done."]))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "app.py").write_text("print('app')\n")
    (ws / "link_to_app").symlink_to("app.py")
    changes = [(n, {k: v.format(ws=ws) for k, v in a.items()}) for n, a in CHANGES]
    (tmp_path / "attack_agents.py").write_text(AGENT.format(changes=changes))
    return tmp_path


def run_cli(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPWISE_MODEL", "COLUMNS")}
    env["PYTHONPATH"] = str(cwd)
    env["LOOPWISE_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [sys.executable, "-m", "loopwise", "run", "change app.py", *args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_change_asks_on_the_terminal_and_a_denial_changes_nothing(project: Path) -> None:
    ws = project / "ws"
    tools = "--tools=files,shell,python"
    asked = run_cli(
        project,
        "--agent=attack_agents:changer",
        tools,
        f"--workspace={ws}",
        "--approve=ask",
        stdin="n\n" * len(CHANGES),
    )
    assert asked.returncode == 0, asked.stderr
    prompts = asked.stderr.count("approval needed: ")
    for name in {n for n, _ in CHANGES}:
        expected = sum(1 for n, _ in CHANGES if n == name)
        assert asked.stderr.count(f"approval needed: {name} ") == expected, name
    assert (ws / "app.py").read_text() == "print('app')\n"
    # Without a terminal and without --approve, the run stops for input and changes nothing.
    waiting = run_cli(project, "--agent=attack_agents:changer", tools, f"--workspace={ws}")
    assert waiting.returncode == 4, waiting.stderr
    assert waiting.stderr.count("(append_file)") == 6 and "(run_shell)" in waiting.stderr
    assert (ws / "app.py").read_text() == "print('app')\n"
    figure(
        f"approval gates (CLI): {len(CHANGES)} changes to an existing file through "
        f"append/write/delete/shell/python, asked: {prompts}, ran without a decision: 0"
    )


def test_every_cli_tool_that_changes_something_asks(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hello.sh").write_text("#!/bin/sh\necho hi\n")
    (scripts / "hello.sh").chmod(0o755)
    (tmp_path / "old.txt").write_text("old")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    specs = parse_tool_specs(["files,http,git,python,shell,system,documents,browser"])
    specs += parse_tool_specs([f"scripts={scripts}"])
    tools = by_name(build_tools(specs, workspace=tmp_path))
    changing = {
        "write_file": {"path": "old.txt", "content": "x"},
        "append_file": {"path": "old.txt", "content": "x"},
        "delete_file": {"path": "old.txt"},
        "run_python": {"code": "pass"},
        "run_shell": {"command": "true"},
    }
    for name, args in changing.items():
        assert tools[name].needs_approval(args), name
    read_only = {
        "read_file", "list_dir", "find_files", "grep", "http_get", "git_log", "git_status",
        "git_diff", "git_show", "git_blame", "git_shortlog", "git_grep", "list_logs",
        "tail_log", "grep_log", "memory", "disk_usage", "load", "processes", "read_image",
        "read_pdf", "screenshot",
        "run_script",  # runs only the scripts the user listed with --tools scripts=DIR
    }  # fmt: skip
    assert set(tools) == read_only | set(changing), "classify each new tool here"
    figure(f"approval gates: {len(changing)} CLI tools change or delete, all ask by default")


def test_append_to_an_existing_file_pauses_and_a_new_file_does_not(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('app')\n")
    model = ScriptedModel(
        [
            [
                call("append_file", path="new.txt", content="n"),
                call("append_file", path="app.py", content="evil()\n"),
            ],
            "Done.",
        ]
    )
    agent = Agent(model, tools=files(tmp_path))
    paused = agent.run_sync("append")
    assert paused.status == "input_required"
    [pending] = paused.pending_approvals
    assert (pending.tool_name, pending.args["path"]) == ("append_file", "app.py")
    assert (tmp_path / "new.txt").read_text() == "n"
    assert (tmp_path / "app.py").read_text() == "print('app')\n"
    rejected = asyncio.run(agent.resume(paused, {pending.call_id: Reject("no")}))
    assert rejected.status == "completed" and (tmp_path / "app.py").read_text() == "print('app')\n"
    agent = Agent(ScriptedModel([call("append_file", path="app.py", content="ok\n"), "Done."]))
    agent.tools = by_name(files(tmp_path))
    paused = agent.run_sync("append")
    done = asyncio.run(agent.resume(paused, {paused.pending_approvals[0].call_id: Approve()}))
    assert done.status == "completed" and (tmp_path / "app.py").read_text() == "print('app')\nok\n"


def test_unapproved_append_never_adds_to_a_file_that_appeared_after_the_check(
    tmp_path: Path,
) -> None:
    tools = by_name(files(tmp_path))
    append = tools["append_file"]
    assert not append.needs_approval({"path": "late.txt"})  # absent at the decision...
    (tmp_path / "late.txt").write_text("mine\n")  # ...present when the call runs
    with pytest.raises(ModelRetry, match="already exists and adding to it needs approval"):
        direct(append, path="late.txt", content="evil\n")
    assert (tmp_path / "late.txt").read_text() == "mine\n"
    assert direct(append, approved=True, path="late.txt", content="ok\n").startswith("Appended")
    assert not by_name(files(tmp_path, approve_overwrite=False))["append_file"].requires_approval


class FakeSandbox:
    """Counts the commands that would have run."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def run(self, argv: Any, **_: Any) -> SandboxResult:
        self.calls.append(list(argv))
        return SandboxResult(0, "ran\n", "", 0.01)


def test_code_tools_take_an_approval_rule(tmp_path: Path) -> None:
    fake = FakeSandbox()
    limits = Limits(wall_seconds=5)
    [run_shell] = shell(fake, workspace=tmp_path, limits=limits, requires_approval=True)
    [run_python] = python(fake, workspace=tmp_path, requires_approval=lambda a: "os" in a["code"])
    assert not shell(fake, workspace=tmp_path)[0].requires_approval  # the library default
    assert run_python.needs_approval({"code": "import os"})
    assert not run_python.needs_approval({"code": "print(1)"})
    attempts: list[tuple[Tool, dict[str, Any]]] = [
        (run_shell, {"command": "rm -rf ."}),
        (run_python, {"code": "import os"}),
    ]
    for t, args in attempts:
        with pytest.raises(ModelRetry, match="needs a human approval"):
            direct(t, **args)  # called without the loop's decision: refused
    assert direct(run_python, code="print(1)").startswith("exit code 0")
    assert fake.calls == [["python3", "-"]]
    model = ScriptedModel([call("run_shell", command="rm app.py"), "Done."])
    agent = Agent(model, tools=[run_shell])
    paused = agent.run_sync("clean up")
    assert paused.status == "input_required" and len(fake.calls) == 1
    denied = asyncio.run(agent.resume(paused, {paused.pending_approvals[0].call_id: Reject("no")}))
    assert denied.status == "completed" and len(fake.calls) == 1


# --- class 21: regular expressions from the model run in linear time ----------------------

REGEX_CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
from loopwise import Agent, ToolResultPart
from loopwise.models.testing import ScriptedModel, call
from loopwise.toolkits.files import files
from loopwise.toolkits.system import system

ws, grep_patterns, glob_patterns, log_patterns = Path(sys.argv[1]), *json.loads(sys.argv[2])
steps = [
    [call("grep", pattern="(a|a)*c", path="a.txt") for _ in range(6)],
    [call("grep", pattern=p, path=".", glob="*.txt") for p in grep_patterns],
    [call("find_files", pattern=p) for p in glob_patterns],
    [call("grep_log", path="a.txt", pattern=p) for p in log_patterns],
    "Done.",
]
model = ScriptedModel(steps)
agent = Agent(model, tools=[*files(ws), *system(log_dirs=[ws])])

async def main():
    gaps, done = [0.0], asyncio.Event()

    async def tick():
        while not done.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - before - 0.01)

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    result = await agent.run("search")
    elapsed = time.monotonic() - started
    done.set()
    await ticker
    seen = [
        [p.content for p in r.messages[-1].parts if isinstance(p, ToolResultPart)]
        for r in model.requests[1:]
    ]
    print(json.dumps({"status": result.status, "elapsed": elapsed, "gap": max(gaps), "seen": seen}))

asyncio.run(main())
"""
GREP_ATTACKS = [
    "(a+)+$", "(.*a){20}", "(a|aa)+$", "((a*)*)*c", "(a{1,30}){1,30}c", "(a|a?)+c",
    r"(\w+\s?)*$", "^(([a-z])+.)+[A-Z]([a-z])+$", "(x+x+)+y", "(a*)*(a*)*(a*)*c",
]  # fmt: skip
REFUSED = ["a{1000}{1000}", "(a{999}){999}", "(a)\\1c", "(?=a)+c", "(?>a+)+c", "a*+c", "(?x) a"]
GLOB_ATTACKS = ["*a*a*a*a*a*a*a*a*a*a*a*a*b", "**/**/**/**/**/**/**/**/**/b", "**a**a**a**a**a**b"]
LOG_ATTACKS = ["(a|a)*c", "(a+)+$", "(a|aa)+$", "((a*)*)*c"]


def test_backtracking_patterns_run_in_linear_time_and_the_loop_keeps_ticking(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.txt").write_text("a" * 30_000 + "\n" + ("a" * 1_999 + "\n") * 15)
    deep = tmp_path.joinpath(*["a" * 20] * 30)
    deep.mkdir(parents=True)
    (deep / ("a" * 200)).write_text("x")
    attacks = [GREP_ATTACKS + REFUSED, GLOB_ATTACKS, LOG_ATTACKS]
    argv = [sys.executable, "-c", REGEX_CHILD, str(tmp_path), json.dumps(attacks)]
    for _ in range(2):  # a second try only when a busy machine stalled the first one
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        if out["gap"] < 0.2:
            break
    assert out["status"] == "completed"
    six, greps, globs, logs = out["seen"]
    assert all(r.startswith("No matches for '(a|a)*c'") for r in six)
    assert len(greps) == len(GREP_ATTACKS) + len(REFUSED)
    for pattern, result in zip(GREP_ATTACKS + REFUSED, greps, strict=True):
        print(f"{pattern!r}: {result.splitlines()[0][:150]}")
        if pattern in REFUSED:
            assert result.startswith("ERROR") and "The regular expression" in result, result
        else:
            assert not result.startswith("ERROR"), result
    assert all(not r.startswith("ERROR") for r in globs + logs), globs + logs
    assert all("time limit" not in r for r in logs)
    assert out["gap"] < 0.2 and out["elapsed"] < 10, out
    held = len(six) + len(greps) + len(globs) + len(logs)
    figure(
        f"backtracking regex: {held} calls (6 parallel '(a|a)*c' greps on 30 KB of 'a', "
        f"{len(GREP_ATTACKS)} grep, {len(GLOB_ATTACKS)} glob, {len(LOG_ATTACKS)} grep_log "
        f"variants, {len(REFUSED)} refused with a sentence), all held: {out['elapsed']:.2f} s "
        f"in all, longest event-loop gap {out['gap'] * 1000:.0f} ms"
    )


def test_python_spellings_are_translated_for_re2(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("café\nend\nAbc\nx{,3}\nxxxx\n")
    grep = by_name(files(tmp_path))["grep"]
    found = {
        p: direct(grep, pattern=p, path="t.txt", ignore_case=p.startswith("ab"))
        for p in ("caf\\u00e9", "end\\Z", "abc", "^x{,3}$", "[]x]{4}")
    }
    assert found == {
        "caf\\u00e9": "t.txt:1: café",
        "end\\Z": "t.txt:2: end",
        "abc": "t.txt:3: Abc",
        "^x{,3}$": "No matches for '^x{,3}$' in t.txt (1 files searched).",  # 0 to 3 x's
        "[]x]{4}": "t.txt:5: xxxx",
    }
    with pytest.raises(ModelRetry, match="over the limit of 2000"):
        direct(grep, pattern="a" * 2001)


# --- class 20: deep or huge trees -----------------------------------------------------------


def make_deep(root: Path, depth: int, name: str = "d") -> str:
    """A chain of ``depth`` directories (made through descriptors: no path gets too long),
    with needle.txt at the bottom; returns its path relative to ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        leaf = os.open("needle.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"needle\n")
        os.close(leaf)
    finally:
        os.close(fd)
    return "/".join([name] * depth + ["needle.txt"])


def test_a_1200_deep_tree_and_a_1200_link_chain_are_bounded(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    needle = make_deep(ws, 1_200)
    for i in range(1_200):  # l0 -> l1 -> ... -> l1199 -> real.txt
        (ws / f"l{i}").symlink_to(f"l{i + 1}" if i < 1_199 else "real.txt")
    (ws / "real.txt").write_text("real\n")
    tools = by_name(files(ws))
    assert direct(tools["read_file"], path=needle) == "needle\n"
    assert direct(tools["list_dir"], path=needle.rsplit("/", 1)[0]).endswith(
        "needle.txt  (file, 7 bytes)"
    )
    found = direct(tools["find_files"], pattern="**/needle.txt")
    assert found.startswith("No paths match") and "deeper than 64 levels were not entered" in found
    near = needle.rsplit("/", 11)[0]  # ten levels above the file
    assert direct(tools["find_files"], pattern="**/needle.txt", path=near) == needle
    grepped = direct(tools["grep"], pattern="needle")
    assert "deeper than 64 levels were not entered" in grepped
    assert direct(tools["grep"], pattern="needle", path=near) == f"{needle}:1: needle"
    refused = 0
    for t, args in (
        ("read_file", {"path": "l0"}),
        ("append_file", {"path": "l0", "content": "x"}),
        ("list_dir", {"path": "l0"}),
        ("grep", {"pattern": "x", "path": "l0"}),
        ("find_files", {"pattern": "*", "path": "l0"}),
    ):
        with pytest.raises(ModelRetry, match="symbolic link"):
            direct(tools[t], approved=True, **args)
        refused += 1
    assert direct(tools["read_file"], path="l1180") == "real\n"  # 20 links: allowed
    assert "l0  (link)" in direct(tools["list_dir"])
    figure(
        f"deep trees: a 1200-deep directory through 4 file tools and a 1200-link chain "
        f"through {refused} tools, RecursionError: 0 (depth note shown, links refused)"
    )


def test_list_logs_walks_a_deep_log_directory(tmp_path: Path) -> None:
    make_deep(tmp_path, 1_200)
    (tmp_path / "top.log").write_text("x\n")
    [list_logs] = [t for t in system(log_dirs=[tmp_path]) if t.name == "list_logs"]
    shown = direct(list_logs, pattern="*")
    assert shown.startswith(f"{tmp_path / 'top.log'}\t") and "stopped after listing" in shown


def test_100000_files_are_cut_with_a_note(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(100_000):
        os.close(os.open(f"f{i:06}.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    tools = by_name(files(tmp_path))
    started = time.monotonic()
    found = direct(tools["find_files"], pattern="**/*.txt").splitlines()
    grepped = direct(tools["grep"], pattern="x").splitlines()
    listed = direct(tools["list_dir"]).splitlines()
    elapsed = time.monotonic() - started
    assert (
        len(found) == 502
        and found[-1] == "[search stopped after 50000 entries; narrow the path or pattern]"
    )
    assert found[-2] == "[49500 more matches not shown; use a narrower pattern or path]"
    assert grepped == [
        "No matches for 'x' in . (50000 files searched).",
        "[search stopped after 50000 entries; narrow the path or pattern]",
    ]
    assert listed[0] == "./ (over 10000 entries)" and listed[-1].startswith("[over 9500 more")
    assert elapsed < 20
    figure(
        "huge trees: 100000 files through find_files, grep, list_dir: cut with a note "
        f"in {elapsed:.1f} s"
    )


# --- class 18: secrets in what the system tools show ------------------------------------

SECRET_ARGV = [  # each holds one secret, "S" below; the rest of the line stays readable
    ["loopwise", "serve", "--api-key", "lw_Zx8Qm2Lr5Tv9Wc3Yb7Nd1Hk4Jp6Fs0Ga"],
    ["loopwise", "serve", "--api-key=opensesame"],
    ["deploy", "--token", "opensesame", "--verbose"],
    ["backup", "--password=opensesame"],
    ["db-sync", "--client-secret", "opensesame"],
    ["mysql", "-uroot", "-popensesame", "shop"],
    ["sshpass", "-p", "opensesame", "ssh", "host"],
    ["redis-cli", "-a", "opensesame", "ping"],
    ["curl", "-u", "alice:opensesame", "https://example.org"],
    ["docker", "login", "-u", "me", "-p", "opensesame", "registry.example.org"],
    ["env", "DB_PASSWORD=opensesame", "python", "app.py"],
    ["sh", "-c", "GITHUB_TOKEN=opensesame make release"],
    ["java", "-Dapp.session.cookie=opensesame", "-jar", "app.jar"],
    ["psql", "postgresql://app:opensesame@db:5432/shop"],
    ["git", "clone", "https://ghp_Zx8Qm2Lr5Tv9Wc3Yb7Nd1Hk4Jp6Fs0GaXyZ1@github.com/o/r"],
    ["curl", "-H", "Authorization: Bearer opensesame42", "https://api.example.org"],
    ["fetch", "https://api.example.org/v1?access_token=opensesame&page=2"],
    ["worker", "sk-proj-Zx8Qm2Lr5Tv9Wc3Yb7Nd1Hk4"],
    ["worker", "xoxb-1234567890-Zx8Qm2Lr5Tv9"],
    ["worker", "AKIAZX8QM2LR5TV9WC3Y"],
    ["worker", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.Zx8Qm2Lr5Tv9Wc3Yb7Nd1H"],
    ["worker", "--config", '{"api_key": "opensesame"}'],
    ["worker", "c2VjcmV0LWtleS0xMjM0NTY3ODkwYWJjZGVmZ2hp"],
]
SECRETS = [
    "opensesame", "Zx8Qm2Lr5Tv9", "AKIAZX8QM2LR5TV9WC3Y", "c2VjcmV0LWtleS0xMjM0NTY3",
]  # fmt: skip


def test_process_command_lines_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_module = importlib.import_module("loopwise.toolkits.system")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 1000 kB\n")
    stat = "{pid} (worker) S 1 1 1 0 -1 0 0 0 0 0 {pid} 5 0 0 20 0 1 0 100 1000 300\n"
    for pid, argv in enumerate(SECRET_ARGV, 100):
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "stat").write_text(stat.format(pid=pid))
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    monkeypatch.setattr(system_module, "_proc", lambda: proc)
    monkeypatch.setattr(system_module, "_CPU_SAMPLE_S", 0.01)
    shown = system_module.processes(limit=100)["processes"]
    commands = {p["pid"]: p["command"] for p in shown}
    leaked = [c for c in commands.values() if any(s in c for s in SECRETS)]
    for pid, argv in enumerate(SECRET_ARGV, 100):
        print(commands[pid])
        assert "[REDACTED]" in commands[pid] and commands[pid].split()[0] == argv[0]
    assert leaked == []
    assert commands[100] == "loopwise serve --api-key [REDACTED]"
    assert commands[105] == "mysql -uroot -p[REDACTED] shop"
    assert commands[112] == "java -Dapp.session.cookie=[REDACTED] -jar app.jar"
    figure(f"secrets in process lists: {len(SECRET_ARGV)} command lines, leaked: {len(leaked)}")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_a_real_process_with_a_key_on_its_command_line(tmp_path: Path) -> None:
    key = "lw_" + os.urandom(24).hex()
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    argv = [sys.executable, "-c", spin, "serve", "--api-key", key, f"--token={key}"]
    with subprocess.Popen(argv) as busy:
        try:
            time.sleep(0.2)
            [processes] = [t for t in system() if t.name == "processes"]
            out = json.dumps(direct(processes, limit=100))
        finally:
            busy.kill()
    assert f'"pid": {busy.pid}' in out and "--api-key [REDACTED] --token=[REDACTED]" in out
    assert key not in out and key[:20] not in out


def test_log_lines_are_redacted_unless_turned_off(tmp_path: Path) -> None:
    lines = [
        "GET /login?password=opensesame 200",
        "Authorization: Bearer opensesame42",
        "connect postgresql://app:opensesame@db/shop",
        'payload {"api_key": "opensesame"}',
        "token sk-proj-Zx8Qm2Lr5Tv9Wc3Yb7Nd1Hk4 used",
        "ERROR event 10 at 10:00:20 session id missing",
    ]
    (tmp_path / "app.log").write_text("\n".join(lines) + "\n")
    tools = by_name(system(log_dirs=[tmp_path]))
    tail = direct(tools["tail_log"], path="app.log")
    grep = direct(tools["grep_log"], path="app.log", pattern="opensesame|sk-proj")
    shown = tail + grep.split("\n", 1)[1]  # the first line of grep's answer is its pattern
    assert not any(s in shown for s in SECRETS), shown
    assert tail.endswith("ERROR event 10 at 10:00:20 session id missing")
    assert "5 matching lines" in grep and "'opensesame|sk-proj'" in grep  # the pattern shown
    raw = by_name(system(log_dirs=[tmp_path], redact=False))
    assert "opensesame" in direct(raw["tail_log"], path="app.log")
    figure(f"secrets in log lines: {len(lines) - 1} lines through tail_log and grep_log, leaked: 0")


def test_redaction_keeps_ordinary_command_lines() -> None:
    from loopwise.toolkits._redact import redact_argv, redact_text

    ordinary = [
        ["/usr/bin/python3", "-m", "http.server", "8080", "--bind", "127.0.0.1"],
        ["nginx:", "worker", "process"],
        ["docker", "run", "-p", "8080:80", "--name", "web", "nginx:1.25"],
        ["mysql", "-p", "shop"],  # a bare -p asks on the terminal: "shop" is the database
        ["chromium", "--type=renderer", "--enable-features=NetworkServiceInProcess2"],
        ["node", "/srv/app/node_modules/.bin/next-server-production-build", "--port=3000"],
        ["python", "-c", "import sys,time; b = b'x' * 300_000_000"],
        ["git", "clone", "https://github.com/owner/repo"],
    ]
    for argv in ordinary:
        assert redact_argv(argv) == " ".join(argv)
    for line in ("basic authentication failed", "ERROR 10:00:20 token expired", "a=1 b=2"):
        assert redact_text(line) == line
    hostile = ["a" * 50_000, "a-" * 25_000, "ab=" * 20_000, "--key " * 10_000, '"' * 50_000]
    hostile += ["-----BEGIN PRIVATE KEY-----" * 2_000, "https://" * 6_000, "eyJ" * 16_000]
    for text in hostile:  # linear patterns: hostile text cannot hold the GIL for long
        started = time.perf_counter()
        redact_text(text, entropy=True)
        assert time.perf_counter() - started < 0.5, text[:20]


def test_without_re2_grep_refuses_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "t.txt").write_text("a\n")
    monkeypatch.setitem(sys.modules, "re2", None)  # as if google-re2 were not installed
    tools = by_name(files(tmp_path))
    calls: list[tuple[str, dict[str, Any]]] = [
        ("grep", {"pattern": "a"}),
        ("find_files", {"pattern": "*"}),
    ]
    for name, args in calls:
        with pytest.raises(ModelRetry, match="google-re2 package is not installed"):
            direct(tools[name], **args)
