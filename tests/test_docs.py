"""Documentation examples are executed: the README quick start and the module doctests."""

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import loopwise.models.testing
from wire_servers import Reply, ToolCall, WireServer

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_testing_module_doctest() -> None:
    failed, attempted = doctest.testmod(loopwise.models.testing)
    assert attempted > 0 and failed == 0


def test_readme_quick_start_runs_against_a_local_anthropic_server() -> None:
    quick_start = python_blocks()[0]
    assert 'Agent(\n    "anthropic:claude-sonnet-4-6"' in quick_start
    with WireServer() as server:
        server.push(
            Reply(text="I'll add them.", tool_calls=(ToolCall("add", {"a": 17, "b": 25}),)),
            Reply(text="17 + 25 = 42", input_tokens=120, output_tokens=8),
        )
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "test"}
        done = subprocess.run(
            [sys.executable, "-c", quick_start],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("completed 17 + 25 = 42 ")
        results = [m for m in server.bodies[1]["messages"] if m["role"] == "user"][-1]
        assert results["content"][0]["content"] in ("42", [{"type": "text", "text": "42"}])


def test_readme_toolkit_example_builds_the_agent(tmp_path: Path) -> None:
    block = next(b for b in python_blocks() if "loopwise.toolkits" in b)
    (tmp_path / "work").mkdir()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    check = block + (
        "\nassert {'read_file', 'git_log', 'http_get', 'run_python'} <= set(agent.tools)"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
