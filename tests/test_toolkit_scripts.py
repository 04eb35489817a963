"""The scripts toolkit: real executables in tmp_path, run without a shell, bounded and clean."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import Agent, ModelRetry, Tool, ToolResultPart, UsageError
from loopwise.models.testing import ScriptedModel, call
from loopwise.toolkits.scripts import scripts

CANARY = "canary-sk-ant-0000-do-not-leak"


def write(path: Path, text: str, mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    write(
        d / "greet.sh", '#!/bin/sh\n# Print each argument on its own line.\nprintf "%s\\n" "$@"\n'
    )
    write(
        d / "env.py",
        f'#!{sys.executable}\n"""Dump the environment as JSON."""\n'
        "import json, os\nprint(json.dumps(dict(os.environ)))\n",
    )
    write(d / "fail.sh", "#!/bin/sh\necho 'disk is full' >&2\nexit 3\n")
    write(
        d / "noisy.py",
        f"#!{sys.executable}\nimport sys\nsys.stdout.write('x' * 2_000_000 + 'END')\n",
    )
    write(
        d / "hang.sh",
        # A background child that outlives its parent unless the whole group is killed.
        '#!/bin/sh\nsleep 60 &\necho $! > "$1"\necho started\nsleep 60\n',
    )
    write(d / "notes.txt", "not executable\n", mode=0o644)
    (d / "subdir").mkdir()
    outside = write(tmp_path / "outside.sh", "#!/bin/sh\necho outside\n")
    (d / "escape").symlink_to(outside)
    (d / "alias.sh").symlink_to(d / "greet.sh")
    return d


def by_name(tools: list[Tool]) -> Tool:
    [run_script] = tools
    assert run_script.name == "run_script" and run_script.idempotent is False
    return run_script


def run(t: Tool, **args: Any) -> str:
    result: str = asyncio.run(t.call(t.validate(args), None))
    return result


def dies_within(pid: int, seconds: float) -> bool:
    """Wait for ``pid`` (not our child) to exit: SIGKILL is delivered asynchronously."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], seconds)
        return bool(readable)
    finally:
        os.close(fd)


def test_directory_lists_only_executable_files_inside(bin_dir: Path) -> None:
    t = by_name(scripts(bin_dir))
    listed = [line[2:].split(":")[0] for line in t.description.splitlines()[1:]]
    assert listed == ["alias.sh", "env.py", "fail.sh", "greet.sh", "hang.sh", "noisy.py"]
    assert "- greet.sh: Print each argument on its own line." in t.description
    assert "- env.py: Dump the environment as JSON." in t.description


def test_allowed_script_runs_with_args(bin_dir: Path) -> None:
    out = run(by_name(scripts(bin_dir)), name="greet.sh", args=["hello", "two words"])
    assert out.startswith("script greet.sh: exit code 0, duration ")
    assert "--- stdout ---\nhello\ntwo words" in out and "--- stderr: empty" in out


def test_exit_code_and_stderr(bin_dir: Path) -> None:
    out = run(by_name(scripts(bin_dir)), name="fail.sh")
    assert "exit code 3" in out and "--- stderr ---\ndisk is full" in out


def test_unknown_and_outside_names_are_refused_with_the_allowed_list(bin_dir: Path) -> None:
    t = by_name(scripts(bin_dir))
    for name in ("rm", "escape", "notes.txt", "../outside.sh", "subdir", "/bin/sh"):
        with pytest.raises(ModelRetry, match=r"Allowed scripts: alias\.sh, env\.py") as info:
            t.function(name=name)
        assert repr(name) in info.value.message


def test_shell_metacharacters_are_passed_literally(bin_dir: Path, tmp_path: Path) -> None:
    nasty = ["; rm -rf /", "$(touch pwned1)", "`touch pwned2`", "&& touch pwned3", "*", "$HOME"]
    out = run(by_name(scripts(bin_dir, cwd=tmp_path)), name="greet.sh", args=nasty)
    assert out.split("--- stdout ---\n")[1].split("\n--- stderr")[0] == "\n".join(nasty)
    assert not list(tmp_path.glob("pwned*"))
    figure(f"scripts: shell metacharacter payloads: {len(nasty)}, interpreted: 0")


def test_host_secrets_do_not_reach_scripts(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    out = run(by_name(scripts(bin_dir, env={"APP_MODE": "test"})), name="env.py")
    env = json.loads(out.split("--- stdout ---\n")[1].split("\n--- stderr")[0])
    assert CANARY not in out
    assert env["APP_MODE"] == "test" and set(env) >= {"PATH", "HOME", "LANG"}
    print(f"\nscript environment: {sorted(env)}; canaries found: 0")


def test_timeout_kills_the_script_and_its_children(bin_dir: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    out = run(by_name(scripts(bin_dir, timeout=1.0)), name="hang.sh", args=[str(pid_file)])
    elapsed = time.monotonic() - started
    child = int(pid_file.read_text())
    assert "killed after the 1 s time limit" in out and "started" in out
    assert elapsed < 3.0 and dies_within(child, 2.0)
    print(f"\nhanging script stopped after {elapsed:.2f} s; background child {child} alive: no")


def test_background_child_does_not_outlive_a_finished_script(tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    write(tmp_path / "bg.sh", '#!/bin/sh\nsleep 60 > /dev/null 2>&1 &\necho $! > "$1"\necho done\n')
    out = run(by_name(scripts({"bg": tmp_path / "bg.sh"})), name="bg", args=[str(pid_file)])
    assert "exit code 0" in out and "done" in out
    assert dies_within(int(pid_file.read_text()), 2.0)


def test_huge_output_is_capped(bin_dir: Path) -> None:
    t = by_name(scripts(bin_dir, max_output_chars=1_000))
    out = run(t, name="noisy.py")
    assert "[truncated: 1999003 bytes omitted]" in out and "END\n--- stderr: empty" in out
    assert len(out) < 1_200
    print(f"\n2,000,003 bytes of stdout became {len(out)} characters")


def test_mapping_with_paths_and_argv_prefixes(tmp_path: Path) -> None:
    script = write(tmp_path / "hello.sh", '#!/bin/sh\necho hello "$1"\n')
    t = by_name(
        scripts(
            {
                "hello": script,
                "argv": [sys.executable, "-c", "import sys; print(sys.argv[1:])"],
            }
        )
    )
    assert "- argv: " in t.description and "- hello" in t.description
    assert "hello world" in run(t, name="hello", args=["world"])
    assert "['-x', '--flag=1']" in run(t, name="argv", args=["-x", "--flag=1"])


def test_nul_byte_in_an_argument_goes_back_to_the_model(bin_dir: Path) -> None:
    with pytest.raises(ModelRetry, match="Invalid argument"):
        by_name(scripts(bin_dir)).function(name="greet.sh", args=["a\0b"])


def test_script_swapped_for_a_symlink_after_building_is_refused(bin_dir: Path) -> None:
    t = by_name(scripts(bin_dir))
    (bin_dir / "greet.sh").unlink()
    (bin_dir / "greet.sh").symlink_to("/bin/sh")
    with pytest.raises(ModelRetry, match="no longer available"):
        t.function(name="greet.sh", args=["-c", "id"])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"x": "/nonexistent/script"}, "not an executable file"),
        ({"x": []}, "empty argv prefix"),
        ({"x": ["no-such-program-xyz"]}, "was not found on PATH"),
        ({"two words": ["true"]}, "without spaces"),
        ("/nonexistent/dir", "does not exist"),
    ],
)
def test_bad_configuration_is_a_usage_error(source: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        scripts(source)


def test_empty_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No runnable scripts"):
        scripts(tmp_path)


def test_module_doctest() -> None:
    # By name: the package may re-export the factory under the module's name.
    module = importlib.import_module("loopwise.toolkits.scripts")
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


def test_agent_corrects_bad_arguments_then_runs_the_script(bin_dir: Path) -> None:
    model = ScriptedModel(
        [
            call("run_script", script="greet.sh"),
            call("run_script", name="greet.sh", args="hello"),
            call("run_script", name="deploy.sh"),
            call("run_script", name="greet.sh", args=["hello"]),
            "The script said hello.",
        ]
    )
    result = Agent(model, tools=scripts(bin_dir)).run_sync("run greet")
    assert result.status == "completed" and result.output == "The script said hello."
    seen = [parts[0] for parts in observations(model)]
    assert seen[0].is_error and "field 'script': unknown field" in seen[0].content
    assert "field 'name': Field required" in seen[0].content
    assert seen[1].is_error and "field 'args'" in seen[1].content
    assert seen[2].is_error and "Unknown script 'deploy.sh'. Allowed scripts:" in seen[2].content
    assert not seen[3].is_error and "exit code 0" in seen[3].content
    assert "--- stdout ---\nhello" in seen[3].content
    assert "- greet.sh: Print each argument" in model.requests[0].tools[0].description


def observations(model: ScriptedModel) -> list[list[ToolResultPart]]:
    """The tool results the model received at each request after the first."""
    return [
        [p for p in getattr(req.messages[-1], "parts", ()) if isinstance(p, ToolResultPart)]
        for req in model.requests[1:]
    ]
