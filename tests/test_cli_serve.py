"""``loopwise serve`` and ``loopwise worker`` as real processes; ``loopwise runs ...`` and
``loopwise approve`` against them."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loopwise.server import hash_key
from server_helpers import Api, wait_status

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["LOOPWISE_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


@dataclass
class Process:
    """A long-running ``loopwise`` command whose stdout lines are read as they come."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen}") from None
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Process:
    log = (tmp_path / f"stderr-{time.monotonic_ns()}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopwise", *args],
        cwd=tmp_path,
        env=env or environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    return Process(proc)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[Process, str, str]]:
    server = start(
        tmp_path,
        "serve",
        "--agents",
        "server_agents",
        "--port",
        "0",
        "--database",
        database(tmp_path),
    )
    url = server.expect(r"loopwise serving (http://\S+)")[1]
    key_file = Path(server.expect(r"API key: in (\S+) \(readable by you only")[1])
    assert key_file == tmp_path / "data" / "local_api_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    yield server, url, key_file.read_text().strip()
    assert server.stop() == 0


def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.sqlite'}"


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopwise", *args],
        cwd=tmp_path,
        env=environment(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_runs_commands_against_a_served_api(
    tmp_path: Path, serve: tuple[Process, str, str]
) -> None:
    _, url, key = serve
    # Loopback without configured keys: this user's key, which the CLI finds on its own.
    assert Api(url).get("/v1/runs").status == 401  # another local user or process
    api = Api(url, key)
    counted = api.post("/v1/runs", {"agent": "counting", "input": "count"}).json()["id"]
    wait_status(api, counted, "completed")

    listed = cli(tmp_path, "runs", "list", "--url", url)
    assert listed.returncode == 0 and counted in listed.stdout and "completed" in listed.stdout
    page = json.loads(cli(tmp_path, "runs", "list", "--json", LOOPWISE_URL=url).stdout)
    assert [r["id"] for r in page["data"]] == [counted]
    assert "status" in one_line_error(cli(tmp_path, "runs", "list", "--status", "x", "--url", url))

    shown = cli(tmp_path, "runs", "show", counted, "--url", url)
    assert shown.returncode == 0
    assert "status:    completed" in shown.stdout and "The total is 3." in shown.stdout
    assert "4 model calls, 3 tool calls" in shown.stdout
    assert "run_nope" in one_line_error(cli(tmp_path, "runs", "show", "run_nope", "--url", url))

    # A run waiting for approval: follow its events while it is approved on the CLI.
    gated = api.post("/v1/runs", {"agent": "gated", "input": "tidy"}).json()["id"]
    follow = start(tmp_path, "runs", "events", gated, "--follow", "--url", url)
    follow.expect("approval_requested +delete_file")
    wait_status(api, gated, "input_required")
    shown = cli(tmp_path, "runs", "show", gated, "--url", url).stdout
    assert "pending:   call_0_0  delete_file" in shown
    assert f"loopwise approve {gated} call_0_0" in shown

    bad = cli(tmp_path, "approve", gated, "call_0_0", "--arguments", '{"path": 3}', "--url", url)
    assert "path" in one_line_error(bad)
    assert one_line_error(
        cli(tmp_path, "approve", gated, "call_0_0", "--arguments", "{", "--url", url), 2
    )
    both = cli(
        tmp_path, "approve", gated, "call_0_0", "--reject", "--arguments", "{}", "--url", url
    )
    one_line_error(both, 2)
    approved = cli(tmp_path, "approve", gated, "call_0_0", "--url", url)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith(f"approved call_0_0; run {gated} is ")
    follow.expect(r"run_finished +completed")
    assert follow.proc.wait(timeout=30) == 0
    printed = "\n".join(follow.seen)
    assert "tool_result" in printed and "deleted notes.txt" in printed
    assert "not waiting" in one_line_error(
        cli(tmp_path, "approve", gated, "call_0_0", "--url", url)
    )

    events = cli(tmp_path, "runs", "events", gated, "--json", "--url", url)
    ids = [json.loads(line)["id"] for line in events.stdout.splitlines()]
    assert ids == list(range(1, len(ids) + 1))

    slow = api.post("/v1/runs", {"agent": "slow", "input": "wait"}).json()["id"]
    cancelled = cli(tmp_path, "runs", "cancel", slow, "--url", url)
    assert cancelled.stdout.strip() == f"{slow} cancelled"
    assert "already" in one_line_error(cli(tmp_path, "runs", "cancel", slow, "--url", url))

    nowhere = cli(tmp_path, "runs", "list", "--url", "http://127.0.0.1:9")
    assert "Cannot reach the loopwise server" in one_line_error(nowhere)

    # Retention: prune straight from the database while the server runs.
    kept = cli(tmp_path, "runs", "prune", "--older-than", "1h", "--database", database(tmp_path))
    assert kept.returncode == 0 and kept.stdout.startswith("deleted 0 runs"), kept.stderr
    pruned = cli(
        tmp_path, "runs", "prune", "--older-than", "0s", "--yes", "--database", database(tmp_path)
    )
    assert pruned.stdout.startswith("deleted 3 runs"), (pruned.stdout, pruned.stderr)
    assert api.get(f"/v1/runs/{counted}").status == 404
    one_line_error(cli(tmp_path, "runs", "prune", "--older-than", "soon"), 2)


def test_serve_beyond_loopback_generates_a_key_once(tmp_path: Path) -> None:
    args = ["serve", "--agents", "server_agents", "--host", "0.0.0.0", "--port", "0"]
    args += ["--database", database(tmp_path)]
    server = start(tmp_path, *args)
    port = server.expect(r"loopwise serving http://0\.0\.0\.0:(\d+)")[1]
    key = server.expect(r"API key \(shown only now; its SHA-256 is kept in (\S+)\): (\S+)")
    key_file, secret = Path(key[1]), key[2]
    url = f"http://127.0.0.1:{port}"
    try:
        assert key_file == tmp_path / "data" / "api_keys"
        assert key_file.read_text().strip() == hash_key(secret)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert Api(url).get("/v1/runs").status == 401
        assert Api(url).get("/healthz").status == 200
        assert "needs a key" in one_line_error(cli(tmp_path, "runs", "list", "--url", url))
        listed = cli(tmp_path, "runs", "list", "--url", url, LOOPWISE_API_KEY=secret)
        assert listed.returncode == 0, listed.stderr
        wrong = cli(tmp_path, "runs", "list", "--url", url, "--api-key", "x" * 30)
        assert "not valid" in one_line_error(wrong)
    finally:
        assert server.stop(signal.SIGTERM) == 0
    logged = "".join(p.read_text() for p in tmp_path.glob("stderr-*.log"))
    assert secret not in logged and "x" * 30 not in logged

    again = start(tmp_path, *args)
    try:
        again.expect("loopwise serving")
        again.expect(f"API keys: those hashed in {key_file}")
        assert not any(secret in line for line in again.seen)
    finally:
        assert again.stop() == 0


def test_a_separate_worker_runs_what_the_api_queues(tmp_path: Path) -> None:
    key = "configured-key-0123456789"
    server = start(
        tmp_path,
        "serve",
        "--agents",
        "server_agents",
        "--port",
        "0",
        "--no-workers",
        "--database",
        database(tmp_path),
        env=environment(tmp_path, LOOPWISE_API_KEYS=f"{key}, another-key-0123456789"),
    )
    url = server.expect(r"loopwise serving (http://\S+)")[1]
    worker = start(
        tmp_path,
        "worker",
        "--agents",
        "server_agents",
        "--database",
        database(tmp_path),
        "--concurrency",
        "2",
    )
    try:
        api = Api(url, key)
        assert Api(url).get("/v1/runs").status == 401  # configured keys apply on loopback too
        assert Api(url, "another-key-0123456789").get("/v1/runs").status == 200
        run = api.post("/v1/runs", {"agent": "counting", "input": "count"}).json()["id"]
        assert wait_status(api, run, "completed")["output"] == "The total is 3."
        assert cli(tmp_path, "runs", "show", run, "--url", url, "--api-key", key).returncode == 0
    finally:
        assert worker.stop(signal.SIGTERM) == 0
        assert server.stop() == 0
    logs = "".join(p.read_text() for p in tmp_path.glob("stderr-*.log"))
    assert re.search(r"worker \S+ running", logs) and "worker stopping" in logs
    assert key not in logs
