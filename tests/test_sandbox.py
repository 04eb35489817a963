"""The OS sandbox: network, resource exhaustion, secrets and filesystem (security tests 2, 4, 5).

Needs bubblewrap; without it these tests skip with the reason, except under ``CI=true``
where they fail. The Docker engine test skips whenever no engine answers (CI included:
no engine runs there) unless ``LOOPWISE_REQUIRE_DOCKER=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from figures import figure
from loopwise import UsageError
from loopwise.sandbox import (
    BubblewrapSandbox,
    DockerSandbox,
    Limits,
    SandboxResult,
    SandboxUnavailable,
    default_sandbox,
)
from loopwise.sandbox import bubblewrap as bubblewrap_module
from loopwise.sandbox.process import decode_capped
from loopwise.sandbox.workspace import changed_files, give_to, snapshot

ROOT = os.geteuid() == 0
SANDBOX_UID = 65534


def require(check: Callable[[], None], what: str, *, must: bool) -> None:
    """Skip with the reason when ``check`` raises SandboxUnavailable; fail if ``must``."""
    try:
        check()
    except SandboxUnavailable as exc:
        if must:
            pytest.fail(f"{what} is required here but unavailable: {exc}")
        pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture
def sandbox() -> BubblewrapSandbox:
    box = BubblewrapSandbox()
    require(box.check, "bubblewrap", must=os.environ.get("CI") == "true")
    return box


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def run(box: BubblewrapSandbox, argv: list[str], ws: Path, **kwargs: object) -> SandboxResult:
    return asyncio.run(box.run(argv, workspace=ws, **kwargs))  # type: ignore[arg-type]


def processes_with(marker: str) -> list[str]:
    """Command lines of live (non-zombie) processes that contain ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and str(os.getpid()) != entry.name:
            found.append(f"{entry.name}: {cmdline}")
    return found


# ---------------------------------------------------------------------------------------
# Test 2: no network


@dataclass
class Canary:
    """Loopback listeners that count every TCP connection and UDP datagram they receive."""

    tcp_port: int = 0
    udp_port: int = 0
    tcp6_port: int | None = None
    hits: int = 0

    def hit(self) -> None:
        self.hits += 1
        self.event.set()

    async def start(self) -> None:
        self.event = asyncio.Event()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.hit()
            writer.write(b"canary\n")
            writer.close()

        self._servers = [await asyncio.start_server(accept, "127.0.0.1", 0)]
        self.tcp_port = self._servers[0].sockets[0].getsockname()[1]
        if socket.has_ipv6:
            try:
                server6 = await asyncio.start_server(accept, "::1", 0)
            except OSError:
                pass
            else:
                self._servers.append(server6)
                self.tcp6_port = server6.sockets[0].getsockname()[1]
        canary = self

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                canary.hit()
                self.transport.sendto(data, addr)  # type: ignore[attr-defined]

        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        self.udp_port = self._udp.get_extra_info("sockname")[1]

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._udp.close()


PY_TCP = (
    "import socket,sys\n"
    "s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "print('CONNECTED', s.recv(100))"
)
PY_UDP = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
    "s.connect((sys.argv[1], int(sys.argv[2]))); s.send(b'leak')\n"
    "print('ECHO', s.recv(100))"
)
PY_DNS = "import socket; print(socket.getaddrinfo('example.com', 80))"


def network_vectors(c: Canary) -> dict[str, list[str]]:
    tcp, udp = str(c.tcp_port), str(c.udp_port)
    url = f"http://127.0.0.1:{tcp}/"
    vectors = {
        "python tcp 127.0.0.1": ["python3", "-c", PY_TCP, "127.0.0.1", tcp],
        "python udp 127.0.0.1": ["python3", "-c", PY_UDP, "127.0.0.1", udp],
        "python dns example.com": ["python3", "-c", PY_DNS],
        "bash /dev/tcp": ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{tcp}; echo leak >&3"],
    }
    if c.tcp6_port is not None:
        vectors["python tcp ::1"] = ["python3", "-c", PY_TCP, "::1", str(c.tcp6_port)]
    if Path("/usr/bin/curl").exists():
        vectors["curl"] = ["curl", "-sS", "-m", "3", url]
        vectors["curl dns"] = ["curl", "-sS", "-m", "3", "http://example.com/"]
        if c.tcp6_port is not None:
            vectors["curl ::1"] = ["curl", "-sS", "-m", "3", f"http://[::1]:{c.tcp6_port}/"]
    if Path("/usr/bin/wget").exists():
        vectors["wget"] = ["wget", "-q", "-T", "3", "-t", "1", "-O", "-", url]
    return vectors


def test_no_network_reaches_a_loopback_canary(sandbox: BubblewrapSandbox, workspace: Path) -> None:
    async def scenario() -> tuple[int, dict[str, SandboxResult], int]:
        canary = Canary()
        await canary.start()
        try:
            # Positive control: the canary does count a connection from the host.
            _, writer = await asyncio.open_connection("127.0.0.1", canary.tcp_port)
            writer.close()
            await asyncio.wait_for(canary.event.wait(), 10)
            control, canary.hits = canary.hits, 0
            limits = Limits(wall_seconds=15)
            results = {
                name: await sandbox.run(argv, workspace=workspace, limits=limits)
                for name, argv in network_vectors(canary).items()
            }
            return control, results, canary.hits
        finally:
            canary.close()

    control, results, hits = asyncio.run(scenario())
    assert control == 1
    for name, result in results.items():
        print(f"  {name}: exit {result.exit_code} {result.stderr.strip()[-80:]!r}")
    breaches = [name for name, result in results.items() if result.exit_code == 0]
    figure(
        f"sandbox network vectors: {len(results)}, connections: {hits}, breaches: {len(breaches)}"
    )
    assert hits == 0 and breaches == []
    assert "CONNECTED" not in "".join(r.stdout for r in results.values())


def test_network_only_when_asked(sandbox: BubblewrapSandbox, workspace: Path) -> None:
    async def scenario() -> tuple[SandboxResult, int]:
        canary = Canary()
        await canary.start()
        try:
            argv = ["python3", "-c", PY_TCP, "127.0.0.1", str(canary.tcp_port)]
            result = await sandbox.run(argv, workspace=workspace, network=True)
            return result, canary.hits
        finally:
            canary.close()

    result, hits = asyncio.run(scenario())
    assert result.exit_code == 0 and "CONNECTED" in result.stdout and hits == 1


# ---------------------------------------------------------------------------------------
# Test 4: resource exhaustion


SMALL = Limits(
    cpu_seconds=1,
    memory_mb=128,
    max_processes=20,
    max_file_mb=4,
    wall_seconds=3,
    max_output_bytes=2_000,
)


@dataclass
class Case:
    name: str
    argv: list[str]
    limit: float  # seconds the case may take (the limit that should stop it)
    check: Callable[[SandboxResult], bool]


def exhaustion_cases(marker: str) -> list[Case]:
    tag = f"# {marker}"
    fork_py = f"import os, time {tag}\nwhile 1:\n try: os.fork()\n except OSError: time.sleep(1)"
    return [
        Case("fork bomb (python)", ["python3", "-c", fork_py], SMALL.wall_seconds,
             lambda r: r.timed_out),
        Case("fork bomb (shell)", ["bash", "-c", f":(){{ :|:& }};:; sleep 100 {tag}"],
             SMALL.wall_seconds, lambda r: r.timed_out),
        Case("memory 10x", ["python3", "-c", f"x = bytearray({10 * SMALL.memory_mb} << 20)"],
             SMALL.wall_seconds, lambda r: r.exit_code != 0 and "MemoryError" in r.stderr),
        Case("cpu spin", ["python3", "-c", f"while True: pass {tag}"], SMALL.cpu_seconds,
             lambda r: r.killed_by == "cpu"),
        Case("disk fill (shell)", ["sh", "-c", "head -c 100000000 /dev/zero > big.bin"],
             SMALL.wall_seconds, lambda r: r.killed_by == "file_size"),
        Case("disk fill (python)",
             ["python3", "-c", "open('big2.bin', 'wb').write(bytes(100_000_000))"],
             SMALL.wall_seconds, lambda r: "File too large" in r.stderr),
        Case("huge stdout", ["python3", "-c", "import sys\nfor _ in range(20_000): "
             "sys.stdout.write('x' * 1000)"], SMALL.wall_seconds,
             lambda r: r.exit_code == 0 and "[truncated: 19998000 more bytes]" in r.stdout
             and len(r.stdout) < SMALL.max_output_bytes + 100),
        Case("orphaned background process",
             ["sh", "-c", f"setsid sleep 1000.{marker[-6:]} </dev/null >/dev/null 2>&1 & echo ok"],
             SMALL.wall_seconds, lambda r: r.exit_code == 0 and r.stdout == "ok\n"),
        Case("wall timeout", ["sh", "-c", f"sleep 1001.{marker[-6:]} & sleep 1002.{marker[-6:]}"],
             SMALL.wall_seconds, lambda r: r.timed_out and r.exit_code is None),
    ]  # fmt: skip


def test_resource_exhaustion_is_contained(sandbox: BubblewrapSandbox, workspace: Path) -> None:
    marker = f"lwmark{random.randrange(10**6, 10**7)}"
    cases = exhaustion_cases(marker)
    contained = 0
    for case in cases:
        result = run(sandbox, case.argv, workspace, limits=SMALL)
        left = processes_with(marker[-6:])
        host_ok = subprocess.run(["true"], check=False).returncode == 0
        ok = case.check(result) and result.duration <= case.limit + 2 and not left and host_ok
        contained += ok
        print(
            f"  {case.name}: {'contained' if ok else 'NOT CONTAINED'} in {result.duration:.2f}s"
            f" (limit {case.limit:g}s) exit={result.exit_code} killed_by={result.killed_by}"
            f" left={left}"
        )
    big = [p.stat().st_size for p in workspace.glob("big*.bin")]
    figure(
        f"sandbox resource exhaustion: cases contained: {contained}/{len(cases)}; "
        f"big files on host: {big} bytes"
    )
    assert contained == len(cases)
    assert all(size <= SMALL.max_file_mb << 20 for size in big)


def test_cancellation_kills_the_whole_tree(sandbox: BubblewrapSandbox, workspace: Path) -> None:
    marker = f"{random.randrange(10**6, 10**7)}"
    fifo = workspace / "ready"
    os.mkfifo(fifo)

    async def ready() -> bytes:
        """Wait until the sandboxed command writes to the FIFO (an event, not a poll)."""
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(readable, 10)
            return os.read(fd, 100)
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def scenario() -> tuple[bytes, list[str], list[str]]:
        script = (  # ready once both sleeps show their command line (exec is complete)
            "import subprocess as s\n"
            f"a = s.Popen(['sleep', '1003.{marker}'], start_new_session=True)\n"
            f"b = s.Popen(['sleep', '1004.{marker}'])\n"
            "for p in (a, b):\n"
            "    while b'sleep' not in open(f'/proc/{p.pid}/cmdline', 'rb').read(): pass\n"
            "open('ready', 'w').write('up\\n')\n"
            "b.wait()"
        )
        task = asyncio.create_task(sandbox.run(["python3", "-c", script], workspace=workspace))
        said = await ready()
        running = [p for p in processes_with(marker) if ": sleep " in p]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return said, running, processes_with(marker)

    said, running, left = asyncio.run(scenario())
    print(f"running before cancel: {running}")
    assert said == b"up\n" and len(running) == 2 and left == []


# ---------------------------------------------------------------------------------------
# Test 5: secrets


def test_host_secrets_are_never_visible(
    sandbox: BubblewrapSandbox, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canaries = {
        "ANTHROPIC_API_KEY": "canary-anthropic-7f3a",
        "OPENAI_API_KEY": "canary-openai-91bc",
        "AWS_SECRET_ACCESS_KEY": "canary-aws-55de",
    }
    for key, value in canaries.items():
        monkeypatch.setenv(key, value)
    script = (
        "env; echo ---; tr '\\0' '\\n' < /proc/self/environ; echo ---; "
        "for f in /proc/[0-9]*/environ; do echo $f; tr '\\0' '\\n' < $f; done"
    )
    result = run(sandbox, ["sh", "-c", script], workspace, env={"GIVEN": "explicit-value"})
    dumped = json.dumps(result.to_dict())
    found = [value for value in canaries.values() if value in dumped]
    figure(f"sandbox secrets: canaries found: {len(found)} of {len(canaries)}")
    assert found == [] and "canary-" not in dumped
    assert "GIVEN=explicit-value" in result.stdout  # explicit variables do pass
    variables = {line.split("=")[0] for line in result.stdout.split("---")[0].splitlines()}
    assert variables <= {"PATH", "HOME", "LANG", "GIVEN", "PWD", "SHLVL", "_"}


# ---------------------------------------------------------------------------------------
# Filesystem


FS_PROBE = """
import os, json
writes = {}
for path in ["/etc/x", "/usr/x", "/x", "/bin/x", "/proc/sys/kernel/hostname", "/dev/x",
             "/workspace/../x"]:
    try:
        with open(path, "w") as f:
            f.write("x")
        writes[path] = "written"
    except OSError as exc:
        writes[path] = type(exc).__name__
visible = {p: os.path.exists(p) for p in ["/root", "/work", "/home", "/var", "/opt", "/srv",
                                          "/mnt", "/etc/passwd", "/etc/shadow", "/run"]}
os.makedirs("sub", exist_ok=True)
open("sub/new.txt", "w").write("new")
open("existing.txt", "a").write(" more")
open("/tmp/private-lw.txt", "w").write("tmp")
open("/dev/shm/private-lw.txt", "w").write("shm")
open("/dev/null", "w").write("discarded")
try:
    open("link/escape.txt", "w").write("escape")
except OSError as exc:
    writes["link/escape.txt"] = type(exc).__name__
print(json.dumps({"writes": writes, "visible": visible, "uid": os.getuid()}))
"""


def test_filesystem_isolation(sandbox: BubblewrapSandbox, workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "existing.txt").write_text("old")
    (workspace / "untouched.txt").write_text("same")
    (workspace / "link").symlink_to(outside)
    result = run(sandbox, ["python3", "-c", FS_PROBE], workspace)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    print(f"writes outside: {report['writes']}")
    assert "written" not in report["writes"].values()
    assert not any(report["visible"].values()), report["visible"]
    assert report["uid"] == SANDBOX_UID
    assert result.files_written == ["existing.txt", "sub/new.txt"]
    assert (workspace / "sub/new.txt").read_text() == "new"
    assert (workspace / "existing.txt").read_text() == "old more"
    assert list(outside.iterdir()) == []  # the symlink pointed nowhere inside
    assert not Path("/tmp/private-lw.txt").exists()
    assert not Path("/dev/shm/private-lw.txt").exists()


@pytest.mark.skipif(not ROOT, reason="the workspace is chowned only when the host runs as root")
def test_root_hands_the_workspace_to_the_sandbox_uid_safely(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "d").mkdir(parents=True)
    (ws / "d" / "f.txt").write_text("x")
    target = tmp_path / "secret.txt"
    target.write_text("root only")
    (ws / "link").symlink_to(target)
    os.link(target, ws / "hardlink.txt")
    changed = give_to(ws, SANDBOX_UID, SANDBOX_UID)
    assert changed == 3  # ws, d, d/f.txt
    assert (ws / "d" / "f.txt").stat().st_uid == SANDBOX_UID
    assert target.stat().st_uid == 0  # neither the symlink nor the hard link was followed
    assert give_to(ws, SANDBOX_UID, SANDBOX_UID) == 0


# ---------------------------------------------------------------------------------------
# Measurements, plumbing and validation


def test_start_overhead(sandbox: BubblewrapSandbox, workspace: Path) -> None:
    async def measure() -> list[float]:
        times = []
        for _ in range(10):
            started = time.perf_counter()
            result = await sandbox.run(["true"], workspace=workspace)
            times.append(time.perf_counter() - started)
            assert result.exit_code == 0
        return times

    times = sorted(asyncio.run(measure()))
    figure(f"sandbox start overhead: median {times[5] * 1000:.1f} ms, max {times[-1] * 1000:.1f}")
    assert times[5] < 2.0


def test_stdin_exit_codes_and_signals(sandbox: BubblewrapSandbox, workspace: Path) -> None:
    script = b"import sys; print('ran'); sys.exit(3)"
    result = run(sandbox, ["python3", "-"], workspace, stdin=script)
    assert (result.exit_code, result.stdout, result.killed_by) == (3, "ran\n", None)
    echoed = run(sandbox, ["cat"], workspace, stdin="héllo".encode())
    assert echoed.stdout == "héllo" and echoed.ok
    killed = run(sandbox, ["sh", "-c", "kill -SEGV $$"], workspace)
    assert (killed.exit_code, killed.killed_by) == (139, "signal:SIGSEGV")
    missing = run(sandbox, ["/nonexistent"], workspace)
    assert missing.exit_code != 0 and "nonexistent" in missing.stderr


def test_default_sandbox_prefers_bubblewrap(sandbox: BubblewrapSandbox) -> None:
    assert isinstance(default_sandbox(), BubblewrapSandbox)


def test_no_backend_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_bwrap(self: BubblewrapSandbox) -> None:
        raise SandboxUnavailable("bubblewrap cannot run here ('bwrap' not found); install ...")

    def no_docker(self: DockerSandbox) -> None:
        raise SandboxUnavailable("Docker cannot run here (no engine answers); install ...")

    monkeypatch.setattr(BubblewrapSandbox, "check", no_bwrap)
    monkeypatch.setattr(DockerSandbox, "check", no_docker)
    with pytest.raises(SandboxUnavailable) as info:
        default_sandbox()
    assert str(info.value) == (
        "No sandbox can run code here: bubblewrap cannot run here ('bwrap' not found); "
        "Docker cannot run here (no engine answers). To fix it, install bubblewrap: "
        "apt-get install bubblewrap (or start a Docker engine)."
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"cpu_seconds": 0},
        {"memory_mb": -1},
        {"wall_seconds": float("nan")},
        {"max_processes": True},
        {"max_output_bytes": "10"},
        {"memory_mb": 0.5},
        {"max_workspace_mb": 0},
        {"max_workspace_files": 1.5},
    ],
)
def test_limits_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(UsageError, match=next(iter(bad))):
        Limits(**bad)  # type: ignore[arg-type]


def test_bad_arguments_are_usage_errors(workspace: Path) -> None:
    box = BubblewrapSandbox()
    with pytest.raises(UsageError, match="argv"):
        asyncio.run(box.run([], workspace=workspace))
    with pytest.raises(UsageError, match="argv"):
        asyncio.run(box.run("ls", workspace=workspace))
    with pytest.raises(UsageError, match="environment variable"):
        asyncio.run(box.run(["true"], workspace=workspace, env={"A=B": "x"}))
    with pytest.raises(UsageError, match="not an existing directory"):
        asyncio.run(box.run(["true"], workspace=workspace / "missing"))


def test_result_rendering() -> None:
    result = SandboxResult(1, "out", "err", 1.234, files_written=["a.txt"])
    assert result.summary() == (
        "exit code 1; duration 1.23s\nfiles written: a.txt\nstdout:\nout\nstderr:\nerr"
    )
    assert result.to_dict()["duration"] == 1.234 and not result.ok
    timed = SandboxResult(None, "", "", 3.0, timed_out=True, killed_by="timeout")
    assert timed.summary().startswith("timed out after 3.0s (killed)")
    assert decode_capped(b"ab\xff", 5) == "ab\ufffd\n... [truncated: 5 more bytes]"
    noted = SandboxResult(0, "", "", 0.1, killed_by="workspace_quota", workspace_note="Over.")
    assert noted.summary().endswith("\nworkspace: Over.")


def test_snapshot_reports_changes(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    before = snapshot(tmp_path)
    (tmp_path / "a").write_text("22")
    (tmp_path / "b").write_text("1")
    assert changed_files(before, snapshot(tmp_path)) == ["a", "b"]
    many = {f"f{i:03}": (i, i) for i in range(205)}
    listed = changed_files({}, many)
    assert len(listed) == 201 and listed[-1] == "... and 5 more"


def test_bubblewrap_command_line(workspace: Path) -> None:
    box = BubblewrapSandbox(read_only=["/opt"])
    argv = box.command(["python3", "-"], workspace=workspace, limits=SMALL, env={"A": "1"})
    line = " ".join(argv)
    assert argv[0].endswith("prlimit") and "--cpu=1:2" in argv and "--core=0" in argv
    assert f"--as={128 << 20}" in argv and f"--fsize={4 << 20}" in argv
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session",
                 "--clearenv", "--remount-ro"):  # fmt: skip
        assert flag in argv
    assert f"--bind {workspace} /workspace" in line and "--ro-bind /opt /opt" in line
    assert "--setenv A 1" in line and argv[-3:] == ["--", "python3", "-"]
    assert "--unshare-net" not in box.command(["true"], workspace=None, limits=SMALL, network=True)
    if ROOT:
        assert "/usr/bin/setpriv --reuid=65534 --regid=65534" in line
    else:
        assert "--disable-userns" in argv
    assert "--seccomp" not in argv
    filtered = box.command(["true"], workspace=None, limits=SMALL, seccomp_fd=7)
    assert " --seccomp 7 " in " ".join(filtered)
    if Path("/proc/keys").exists():
        assert "--ro-bind /dev/null /proc/keys" in line


def test_process_limit_adds_to_what_the_uid_already_runs(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RLIMIT_NPROC counts every task of the real uid host-wide, so the limit given to
    # prlimit is the uid's current count plus the sandbox's share (plus bwrap's two
    # processes when they run as that uid too, i.e. when the host is not root).
    monkeypatch.setattr(bubblewrap_module, "_tasks_of", lambda uid: 100)
    argv = BubblewrapSandbox().command(["true"], workspace=workspace, limits=SMALL)
    assert f"--nproc={100 + SMALL.max_processes + (0 if ROOT else 2)}" in argv


def test_probe_failure_is_reported() -> None:
    box = BubblewrapSandbox(bwrap="/no-such-bwrap")
    with pytest.raises(SandboxUnavailable, match=r"'/no-such-bwrap' not found.*apt-get install"):
        box.check()


# ---------------------------------------------------------------------------------------
# Docker


@pytest.fixture
def docker_sandbox() -> Iterator[DockerSandbox]:
    box = DockerSandbox()
    require(
        box.check,
        "a Docker engine (skipped under CI too, where none runs; "
        "LOOPWISE_REQUIRE_DOCKER=1 makes this a failure)",
        must=os.environ.get("LOOPWISE_REQUIRE_DOCKER") == "1",
    )
    yield box


def test_docker_command_line(workspace: Path) -> None:
    box = DockerSandbox(docker="docker")
    argv = box.command(["python3", "-"], workspace=workspace, limits=SMALL, name="lw-1")
    line = " ".join(argv)
    expected = [
        "docker run --rm -i --name lw-1 --network=none",
        "--memory=128m --memory-swap=128m",
        "--pids-limit=20 --read-only --tmpfs /tmp:rw,size=128m,mode=1777",
        "--user 65534:65534 --cap-drop ALL --security-opt no-new-privileges",
        "--ulimit cpu=1:2 --ulimit fsize=4194304 --ulimit nofile=256 --ulimit core=0",
        f"-v {workspace}:/workspace -w /workspace",
        "-e HOME=/tmp -e LANG=C.UTF-8 python:3.11-slim python3 -",
    ]
    for part in expected:
        assert part in line
    networked = box.command(["true"], workspace=workspace, limits=SMALL, network=True)
    assert "--network=bridge" in networked
    with pytest.raises(UsageError, match="image"):
        DockerSandbox("--privileged")


FAKE_DOCKER = """
import os, pathlib, sys, time
here = pathlib.Path(__file__).parent
if sys.argv[1] == "info":
    print("fake-engine-1.0")
elif sys.argv[1] == "run":
    name = sys.argv[sys.argv.index("--name") + 1]
    (here / name).write_text(str(os.getpid()))
    print("container started", flush=True)
    time.sleep(100)
elif sys.argv[1] == "kill":
    (here / "killed").write_text(sys.argv[2])
    os.kill(int((here / sys.argv[2]).read_text()), 9)
"""


def test_docker_timeout_kills_the_container_by_name(tmp_path: Path, workspace: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
    fake.chmod(0o755)
    box = DockerSandbox(docker=str(fake))
    box.check()
    result = asyncio.run(box.run(["sleep", "100"], workspace=workspace, limits=SMALL))
    assert result.timed_out and result.exit_code is None and result.killed_by == "timeout"
    assert result.stdout == "container started\n"
    assert (tmp_path / "killed").read_text().startswith("loopwise-")
    assert result.duration < SMALL.wall_seconds + 2


def test_docker_runs_without_network(docker_sandbox: DockerSandbox, workspace: Path) -> None:
    code = (
        "import socket\ntry:\n socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
        " print('NET')\nexcept OSError:\n print('isolated')\nopen('d.txt','w').write('x')"
    )
    result = asyncio.run(docker_sandbox.run(["python3", "-c", code], workspace=workspace))
    assert result.stdout.strip() == "isolated" and result.files_written == ["d.txt"]


def test_modules_stay_out_of_the_core_import() -> None:
    code = "import sys, loopwise; print([m for m in sys.modules if 'sandbox' in m])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
    assert bubblewrap_module.WORKSPACE == "/workspace"
