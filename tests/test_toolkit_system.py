"""The system toolkit: logs confined to their directories, bounded reads, plausible host facts."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise import Agent, ModelRetry, Tool, ToolResultPart, UsageError
from loopwise.models.testing import ScriptedModel, call
from loopwise.toolkits.system import system

linux_only = pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    (d / "nginx").mkdir(parents=True)
    lines = [
        f"2024-05-01T10:00:{i % 60:02d} {'ERROR' if i % 10 == 0 else 'INFO'} event {i}"
        for i in range(1, 501)
    ]
    (d / "app.log").write_text("\n".join(lines) + "\n")
    (d / "nginx" / "access.log").write_text("GET / 200\nGET /admin 403\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    (d / "escape.log").symlink_to(tmp_path / "secret.txt")
    (d / "inside-link.log").symlink_to(d / "app.log")
    (tmp_path / "logs-evil").mkdir()
    (tmp_path / "logs-evil" / "x.log").write_text("TOP SECRET\n")
    return d


def toolset(log_dir: Path, **options: Any) -> dict[str, Tool]:
    return {t.name: t for t in system(log_dirs=[log_dir], **options)}


def run(t: Tool, **args: Any) -> Any:
    return asyncio.run(t.call(t.validate(args), None))


def test_tools_offered(logs: Path) -> None:
    assert list(toolset(logs)) == [
        "list_logs",
        "tail_log",
        "grep_log",
        "memory",
        "disk_usage",
        "load",
        "processes",
    ]
    assert [t.name for t in system()] == ["memory", "disk_usage", "load", "processes"]
    with pytest.raises(UsageError, match="does not exist"):
        system(log_dirs=[logs / "missing"])


def test_list_logs_shows_only_files_inside(logs: Path) -> None:
    out = run(toolset(logs)["list_logs"])
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert names == [str(logs / n) for n in ("app.log", "inside-link.log", "nginx/access.log")]
    only_nginx = run(toolset(logs)["list_logs"], pattern="nginx/*")
    assert only_nginx.count("\n") == 0 and "access.log" in only_nginx
    assert "no log files match" in run(toolset(logs)["list_logs"], pattern="*.gz")


def test_paths_outside_the_log_directories_are_refused(logs: Path, tmp_path: Path) -> None:
    tools = toolset(logs)
    attempts = [
        "../secret.txt",
        str(tmp_path / "secret.txt"),
        "escape.log",
        str(logs / "escape.log"),
        "nginx/../../secret.txt",
        str(logs / ".." / "secret.txt"),
        "/etc/passwd",
        "/proc/self/environ",
        str(tmp_path / "logs-evil" / "x.log"),
        "../logs-evil/x.log",
        "",
        "app.log\0.txt",
    ]
    refused = 0
    for path in attempts:
        for name, extra in (("tail_log", {}), ("grep_log", {"pattern": "SECRET"})):
            with pytest.raises(ModelRetry) as info:
                tools[name].function(path=path, **extra)
            assert "SECRET" not in info.value.message
            refused += 1
    with pytest.raises(ModelRetry, match=f"outside the allowed log directories \\({logs}\\)"):
        tools["tail_log"].function(path="escape.log")
    with pytest.raises(ModelRetry, match=r"No log file 'nope\.log'"):
        tools["tail_log"].function(path="nope.log")
    figure(f"system: log path escapes tried: {refused}, refused: {refused}, secrets read: 0")


def test_tail(logs: Path) -> None:
    tools = toolset(logs)
    out = run(tools["tail_log"], path="app.log", lines=3)
    assert out.splitlines()[1:] == [
        "2024-05-01T10:00:18 INFO event 498",
        "2024-05-01T10:00:19 INFO event 499",
        "2024-05-01T10:00:20 ERROR event 500",
    ]
    assert out.startswith(f"{logs / 'app.log'} (")
    assert len(run(tools["tail_log"], path="inside-link.log", lines=5000).splitlines()) == 501
    assert "access.log" in run(tools["tail_log"], path=str(logs / "nginx" / "access.log"))


def test_tail_of_a_big_file_is_fast(logs: Path) -> None:
    big = logs / "big.log"
    with big.open("wb") as f:
        f.write((b"x" * 99 + b"\n") * 500_000)  # 50 MB
        f.write(b"".join(b"final line %d\n" % i for i in range(20)))
    started = time.perf_counter()
    out = run(toolset(logs)["tail_log"], path="big.log", lines=20)
    elapsed = time.perf_counter() - started
    assert out.splitlines()[1:] == [f"final line {i}" for i in range(20)]
    assert elapsed < 0.5
    print(f"\ntail of a {big.stat().st_size / 1e6:.0f} MB log: {elapsed * 1000:.1f} ms")


def test_tail_bounds_long_lines_and_total_output(logs: Path) -> None:
    (logs / "wide.log").write_text(("y" * 10_000 + "\n") * 100)
    out = run(toolset(logs)["tail_log"], path="wide.log", lines=100)
    assert "[8000 more characters]" in out and "[earlier lines omitted" in out
    assert len(out) < 52_000


def test_grep(logs: Path) -> None:
    tools = toolset(logs)
    out = run(tools["grep_log"], path="app.log", pattern=r"ERROR event \d+0$")
    assert out.splitlines()[0].endswith(
        ": 50 matching lines in the last 500 lines (17.0 KB read), newest last; "
        "the file has 500 lines"
    )
    assert "\n10:2024-05-01T10:00:10 ERROR event 10\n" in out
    assert out.endswith("\n500:2024-05-01T10:00:20 ERROR event 500")  # file order
    newest = run(
        tools["grep_log"], path="app.log", pattern="error", ignore_case=True, max_matches=3
    )
    assert newest.splitlines()[0] == (
        f"{logs / 'app.log'}: 'error': 3 matching lines in the last 21 lines (17.0 KB read), "
        "newest last; the file has 500 lines"
    )
    assert [line.split(":")[0] for line in newest.splitlines()[1:]] == ["480", "490", "500"]
    oldest = run(
        tools["grep_log"], path="app.log", pattern="error", ignore_case=True, max_matches=3,
        newest=False,
    )  # fmt: skip
    assert (
        oldest.splitlines()[0]
        == f"{logs / 'app.log'}: 'error': 3 matching lines in 30 lines (1014 B scanned)"
    )
    assert [line.split(":")[0] for line in oldest.splitlines()[1:]] == ["10", "20", "30"]
    for newest_first in (True, False):
        out = run(tools["grep_log"], path="app.log", pattern="error", newest=newest_first)
        assert "0 matching lines" in out
    with pytest.raises(ModelRetry, match="is invalid"):
        tools["grep_log"].function(path="app.log", pattern="(unclosed")
    with pytest.raises(ModelRetry, match="uses a lookahead"):
        tools["grep_log"].function(path="app.log", pattern="ERROR(?= event)")


def test_newest_matches_of_a_big_log_cost_a_few_reads(logs: Path) -> None:
    big = logs / "big.log"
    with big.open("w") as f:
        for i in range(1, 2_000_001):
            f.write(f"line {i} INFO ok\n" if i % 500_000 else f"line {i} ERROR boom\n")
        f.write("last line without a newline ERROR tail")
    started = time.monotonic()
    out = run(toolset(logs)["grep_log"], path="big.log", pattern="ERROR", max_matches=2)
    elapsed = time.monotonic() - started
    head, *found = out.splitlines()
    assert found == [
        "2000000:line 2000000 ERROR boom",
        "2000001:last line without a newline ERROR tail",
    ]
    assert "2 matching lines in the last 2 lines" in head and "the file has 2000001 lines" in head
    print(f"\nnewest 2 matches of a {big.stat().st_size / 1e6:.0f} MB log: {elapsed:.2f} s")


def test_a_catastrophic_pattern_runs_in_linear_time(logs: Path) -> None:
    (logs / "evil.log").write_text("aaaa\n" + "a" * 40 + "!\n" + "aaaa\n")
    started = time.monotonic()
    out = run(toolset(logs)["grep_log"], path="evil.log", pattern=r"^(a+)+$")
    assert out.splitlines()[1:] == ["1:aaaa", "3:aaaa"] and time.monotonic() - started < 3.0


def test_without_re2_a_catastrophic_pattern_is_stopped(
    logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        importlib.import_module("loopwise.toolkits.system"), "re2_home", lambda: None
    )
    (logs / "evil.log").write_text("aaaa\n" + "a" * 40 + "!\n" + "aaaa\n")
    tools = toolset(logs, grep_timeout=1.0)
    started = time.monotonic()
    out = run(tools["grep_log"], path="evil.log", pattern=r"^(a+)+$")
    elapsed = time.monotonic() - started
    assert "stopped at the 1 s time limit" in out and out.splitlines()[1:] == ["-1:aaaa"]
    assert "numbered back from the end" in out
    assert elapsed < 3.0
    print(f"\ncatastrophic regex on a 41-character line: stopped after {elapsed:.2f} s")


def test_grep_over_a_huge_single_line_is_bounded(logs: Path) -> None:
    with (logs / "oneline.log").open("wb") as f:
        f.write(b"z" * 20_000_000 + b" needle\nneedle again\n")
    out = run(toolset(logs)["grep_log"], path="oneline.log", pattern="needle")
    assert out.endswith(
        ": 1 matching lines in the last 2 lines (19.1 MB read), newest last; the file has "
        "2 lines\n2:needle again"
    )


@linux_only
def test_memory_disk_and_load_are_plausible(tmp_path: Path) -> None:
    tools = {t.name: t for t in system()}
    mem = run(tools["memory"])
    assert mem["total_mb"] > 0 and 0 <= mem["available_mb"] <= mem["total_mb"]
    assert 0 <= mem["used_percent"] <= 100 and mem["swap_used_mb"] <= mem["swap_total_mb"]
    disk = run(tools["disk_usage"], path=str(tmp_path))
    assert disk["total_gb"] > 0 and 0 <= disk["used_percent"] <= 100
    assert disk["free_gb"] <= disk["total_gb"]
    with pytest.raises(ModelRetry, match="Cannot check disk usage"):
        tools["disk_usage"].function(path=str(tmp_path / "missing"))
    load = run(tools["load"])
    assert load["cpu_count"] == os.cpu_count() and load["load_1m"] >= 0 and load["uptime_s"] > 0
    print(f"\nmemory {mem}\ndisk {disk}\nload {load}")


@linux_only
def test_processes_finds_a_busy_and_a_big_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    code = "import sys,time; b = b'x' * 300_000_000; print('ready', flush=True); time.sleep(60)"
    big = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    with busy, big:  # closes the pipe and reaps both
        try:
            assert big.stdout is not None and big.stdout.readline() == b"ready\n"
            tools = {t.name: t for t in system()}
            by_cpu = run(tools["processes"], limit=20, sort="cpu")
            by_mem = run(tools["processes"], limit=5, sort="memory")
            everyone = run(tools["processes"], limit=100, sort="memory")
        finally:
            busy.kill()
            big.kill()
    assert busy.pid in [p["pid"] for p in by_cpu["processes"]]
    top_mem = by_mem["processes"]
    assert big.pid in [p["pid"] for p in top_mem] and top_mem[0]["rss_mb"] >= top_mem[-1]["rss_mb"]
    [me] = [p for p in everyone["processes"] if p["pid"] == big.pid]
    assert me["rss_mb"] > 250 and "b'x' * 300_000_000" in me["command"]
    [spinner] = [p for p in by_cpu["processes"] if p["pid"] == busy.pid]
    assert spinner["cpu_percent"] > 10
    assert by_cpu["total_processes"] > 2 and len(everyone["processes"]) <= 100
    print(f"\nprocesses: {by_cpu['total_processes']}; spinner {spinner['cpu_percent']}% cpu")


def test_agent_corrects_bad_arguments_and_reads_logs(logs: Path) -> None:
    model = ScriptedModel(
        [
            call("tail_log", file="app.log"),
            call("tail_log", path="../secret.txt", lines=5),
            call("tail_log", path="app.log", lines="five"),
            [
                call("tail_log", path="app.log", lines=1),
                call("grep_log", path="app.log", pattern="ERROR", max_matches=2),
            ],
            "Last event 500 is an error; errors every 10 events.",
        ]
    )
    result = Agent(model, tools=system(log_dirs=[logs])).run_sync("what is wrong?")
    assert result.status == "completed"
    seen = observations(model)
    assert "field 'file': unknown field" in seen[0][0].content
    assert "field 'path': Field required" in seen[0][0].content
    assert seen[1][0].is_error and "outside the allowed log directories" in seen[1][0].content
    assert seen[2][0].is_error and "field 'lines'" in seen[2][0].content
    tail, grep = seen[3]
    assert not tail.is_error and tail.content.endswith("ERROR event 500")
    assert not grep.is_error and "2 matching lines" in grep.content
    assert "500:2024-05-01T10:00:20 ERROR event 500" in grep.content  # the newest first


def test_processes_that_vanish_mid_read_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_module = importlib.import_module("loopwise.toolkits.system")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 1000 kB\n")
    stat = "{pid} (name (odd) x) S 1 1 1 0 -1 0 0 0 0 0 {ut} 5 0 0 20 0 1 0 100 1000 {rss}\n"
    for pid, ut, rss in ((10, 50, 300), (11, 80, 100)):
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "stat").write_text(stat.format(pid=pid, ut=ut, rss=rss))
    (proc / "10" / "cmdline").write_bytes(b"/usr/bin/worker\0--fast\0")
    (proc / "12").mkdir()  # gone before its stat could be read
    (proc / "self").mkdir()
    monkeypatch.setattr(system_module, "_proc", lambda: proc)
    monkeypatch.setattr(system_module, "_CPU_SAMPLE_S", 0.01)
    out = system_module.processes(sort="memory")
    assert out["total_processes"] == 2
    assert [(p["pid"], p["command"]) for p in out["processes"]] == [
        (10, "/usr/bin/worker --fast"),
        (11, "[name (odd) x]"),
    ]
    assert [p["pid"] for p in system_module.processes(sort="cpu")["processes"]] == [11, 10]


def observations(model: ScriptedModel) -> list[list[ToolResultPart]]:
    """The tool results the model received at each request after the first."""
    return [
        [p for p in getattr(req.messages[-1], "parts", ()) if isinstance(p, ToolResultPart)]
        for req in model.requests[1:]
    ]
