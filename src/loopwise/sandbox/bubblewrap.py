"""The bubblewrap backend: Linux namespaces, a read-only system, kernel resource limits.

Each run gets new network, PID, IPC, UTS (and, when possible, cgroup) namespaces; ``/usr``
and the few ``/etc`` files programs need, read-only; the workspace read-write at
``/workspace`` (the cwd); a private ``/tmp`` and ``/dev/shm`` (tmpfs, in RAM, each at most
``memory_mb``); a clean environment (``PATH``, ``HOME=/tmp``, ``LANG=C.UTF-8`` and what
the caller passes).
``prlimit`` sets CPU time, address space, process count, file size and open files; the
parent enforces wall time and kills the PID namespace, which takes every process of the
run with it (background ones included). A seccomp filter (``seccomp.py``) denies new
namespaces, the kernel keyring, io_uring, bpf, ptrace, mounts and similar calls, and
``/proc/keys`` and a few other kernel-wide lists are masked. The workspace as a whole is
held to ``Limits.max_workspace_mb`` and ``max_workspace_files`` (``quota.py``), and
host-side readers of it (the git tools) wait while a run holds it (``guard.py``).

**When the host runs as root**, the kernel ignores ``RLIMIT_NPROC`` for processes whose
real uid is root (a fork bomb would exhaust the host's PIDs), so the command runs as an
unprivileged uid (``uid``, default 65534 "nobody"). bubblewrap itself still starts as root
(every capability dropped except the few ``setpriv`` needs to switch uid, which the switch
then clears; no untrusted code runs before it): as root it can mount a workspace whose
parent directories the sandbox uid could not traverse, such as ``/root/project``
(unprivileged bwrap resolves the path as that uid and fails). That uid must
also be able to write the workspace, so **the workspace tree is chowned to it before each
run** (symlinks are not followed; files with several hard links are skipped). Root keeps
full access to those files. When the host is not root, bubblewrap runs unprivileged in a
user namespace as the current user and nothing is chowned. Either way, code inside cannot
create a nested user namespace (the filter; unprivileged, ``--disable-userns`` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from .api import (
    INSTALL_HINT,
    Limits,
    SandboxResult,
    SandboxUnavailable,
    check_run_args,
    resolve_workspace,
)
from .process import Outcome, kill_group, run_process
from .seccomp import SeccompUnsupported, open_filter, supported
from .supervise import supervise

__all__ = ["BubblewrapSandbox"]

WORKSPACE = "/workspace"
_MIB = 1024 * 1024
_SYSTEM_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")
_ETC_NETWORK = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
)
# Kernel-wide lists a run has no business reading (keys of its uid, other processes' timers).
_PROC_MASKED = ("/proc/keys", "/proc/key-users", "/proc/timer_list", "/proc/sched_debug")
_SETPRIV = "/usr/bin/setpriv"  # run inside the sandbox, where /usr is the host's
_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


class BubblewrapSandbox:
    """Runs commands under bubblewrap; see the module docstring for what is isolated.

    ``uid``/``gid`` is the unprivileged identity used when the host runs as root;
    ``read_only`` adds host paths mounted read-only at the same place (for example a
    virtual environment the command needs; the sandbox uid must be able to read them).
    """

    name = "bubblewrap"

    def __init__(
        self,
        *,
        bwrap: str | None = None,
        uid: int = 65534,
        gid: int = 65534,
        read_only: Sequence[Path | str] = (),
    ) -> None:
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.uid = uid
        self.gid = gid
        self.read_only = tuple(str(Path(p).resolve()) for p in read_only)
        self.as_root = os.geteuid() == 0

    def check(self) -> None:
        """Raise :class:`SandboxUnavailable` unless a trivial command runs (cached)."""
        problem = _probe(self.bwrap, self.as_root, self.uid, self.gid)
        if problem:
            raise SandboxUnavailable(f"bubblewrap cannot run here ({problem}); {INSTALL_HINT}.")

    async def run(
        self,
        argv: Sequence[str],
        *,
        workspace: Path | str,
        stdin: bytes | None = None,
        limits: Limits | None = None,
        env: Mapping[str, str] | None = None,
        network: bool = False,
    ) -> SandboxResult:
        """Run ``argv`` in a fresh sandbox with ``workspace`` at ``/workspace``."""
        limits = limits or Limits()
        extra = check_run_args(argv, env)
        root = resolve_workspace(workspace)
        await asyncio.to_thread(self.check)
        owner = (self.uid, self.gid) if self.as_root else None

        async def launch(stop: asyncio.Event) -> Outcome:
            return await self._launch(argv, root, limits, extra, network, stdin, stop)

        return await supervise(root, limits, owner, launch)

    async def _launch(
        self,
        argv: Sequence[str],
        root: Path,
        limits: Limits,
        env: dict[str, str],
        network: bool,
        stdin: bytes | None,
        stop: asyncio.Event,
    ) -> Outcome:
        info_read, info_write = os.pipe()
        terminator = _NamespaceKiller(info_read, info_write)
        filter_fd = _filter_fd(self.as_root)
        try:
            command = self.command(
                argv,
                workspace=root,
                limits=limits,
                env=env,
                network=network,
                info_fd=info_write,
                seccomp_fd=filter_fd,
            )
            return await run_process(
                command,
                terminator=terminator,
                stdin=stdin,
                wall_seconds=limits.wall_seconds,
                max_output_bytes=limits.max_output_bytes,
                env={},
                pass_fds=(info_write,) if filter_fd is None else (info_write, filter_fd),
                stop=stop,
            )
        finally:
            if filter_fd is not None:
                os.close(filter_fd)

    def command(
        self,
        argv: Sequence[str],
        *,
        workspace: Path | None,
        limits: Limits,
        env: Mapping[str, str] | None = None,
        network: bool = False,
        info_fd: int | None = None,
        seccomp_fd: int | None = None,
    ) -> list[str]:
        """The full launcher command line (``workspace=None`` mounts an empty tmpfs);
        ``seccomp_fd`` is a descriptor bwrap reads the seccomp filter from."""
        command = [*_prlimit(limits, self._nproc(limits)), self.bwrap]
        command += _namespaces(network)
        command += _filesystem(workspace, limits, network, self.read_only)
        for key, value in {**_BASE_ENV, **(env or {})}.items():
            command += ["--setenv", key, value]
        if info_fd is not None:
            command += ["--info-fd", str(info_fd)]
        if seccomp_fd is not None:
            command += ["--seccomp", str(seccomp_fd)]
        if self.as_root:
            # Only what setpriv needs to switch uid and clear the bounding set, plus entering
            # a 0700 workspace owned by the sandbox uid (bwrap's --chdir runs as root).
            # setpriv's uid switch drops them all before the command runs.
            command += ["--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_READ_SEARCH"):
                command += ["--cap-add", cap]
            command += ["--", _SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}"]
            command += ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
        else:
            command += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
        return [*command, "--", *argv]

    def _nproc(self, limits: Limits) -> int:
        # RLIMIT_NPROC counts every task of the real uid host-wide (measured), so allow
        # what the uid already runs plus the sandbox's own share.
        if self.as_root:
            return _tasks_of(self.uid) + limits.max_processes
        return _tasks_of(os.getuid()) + limits.max_processes + 2  # + bwrap's two


def _prlimit(limits: Limits, nproc: int) -> list[str]:
    cpu = max(1, math.ceil(limits.cpu_seconds))
    return [
        shutil.which("prlimit") or "prlimit",
        f"--cpu={cpu}:{cpu + 1}",
        f"--as={limits.memory_mb * _MIB}",
        f"--nproc={nproc}",
        f"--fsize={limits.max_file_mb * _MIB}",
        f"--nofile={limits.max_open_files}",
        "--core=0",
        "--",
    ]


def _namespaces(network: bool) -> list[str]:
    spaces = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        spaces.append("--unshare-net")
    return [*spaces, "--hostname", "sandbox", "--die-with-parent", "--new-session"]


def _filesystem(
    workspace: Path | None, limits: Limits, network: bool, read_only: Sequence[str]
) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _SYSTEM_LINKS:
        host = Path("/", name)
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    for path in (*_ETC, *(_ETC_NETWORK if network else ())):
        args += ["--ro-bind-try", path, path]
    for path in read_only:
        args += ["--ro-bind", path, path]
    size = str(limits.memory_mb * _MIB)
    args += ["--proc", "/proc", "--dev", "/dev"]
    for path in _PROC_MASKED:
        if os.path.exists(path):  # the same kernel: what the host has, the sandbox has
            args += ["--ro-bind", "/dev/null", path]
    args += ["--size", size, "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--size", size, "--perms", "1777", "--tmpfs", "/tmp"]
    if workspace is None:
        args += ["--tmpfs", WORKSPACE]
    else:
        args += ["--dir", WORKSPACE, "--bind", str(workspace), WORKSPACE]
    return [*args, "--remount-ro", "/", "--chdir", WORKSPACE, "--clearenv"]


def _tasks_of(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) that ``uid`` runs now."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
                count += next((int(x.split()[1]) for x in f if x.startswith("Threads:")), 1)
        except (OSError, ValueError):
            continue
    return count


@cache
def _probe(bwrap: str, as_root: bool, uid: int, gid: int) -> str | None:
    """Why a trivial sandboxed command fails here, or None when it works (once per process)."""
    if shutil.which(bwrap) is None:
        return f"{bwrap!r} not found"
    if shutil.which("prlimit") is None:
        return "'prlimit' not found (util-linux)"
    if as_root and not os.access(_SETPRIV, os.X_OK):
        return f"{_SETPRIV!r} not found (util-linux)"
    try:
        filter_fd = _filter_fd(as_root)
    except SeccompUnsupported as exc:
        return f"{exc} As root the sandbox needs one to block nested user namespaces"
    sandbox = BubblewrapSandbox(bwrap=bwrap, uid=uid, gid=gid)
    command = sandbox.command(["/bin/true"], workspace=None, limits=Limits(), seccomp_fd=filter_fd)
    fds = () if filter_fd is None else (filter_fd,)
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=15, env={}, cwd="/", pass_fds=fds
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        if filter_fd is not None:
            os.close(filter_fd)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        return message.splitlines()[-1]
    return None


def _filter_fd(as_root: bool) -> int | None:
    """A descriptor with the seccomp filter; None where there is none and the host is not
    root (raises :class:`SeccompUnsupported` as root: nested user namespaces stay open)."""
    if not supported():
        if as_root:
            raise SeccompUnsupported("No seccomp filter for this architecture.")
        return None
    return open_filter()


class _NamespaceKiller:
    """Kills a run by its PID namespace: bwrap reports the namespace's init on ``--info-fd``;
    killing it makes the kernel kill every process in the namespace, and the init's pidfd
    turns readable only once they are all gone."""

    def __init__(self, info_read: int, info_write: int) -> None:
        self._info_read: int | None = info_read
        self._info_write: int | None = info_write
        self._info = b""
        self._launcher = 0
        self._pidfd: int | None = None
        self._info_done: asyncio.Future[None] | None = None

    def started(self, process: asyncio.subprocess.Process) -> None:
        self._close_write()
        assert self._info_read is not None
        self._launcher = process.pid
        loop = asyncio.get_running_loop()
        self._info_done = loop.create_future()
        os.set_blocking(self._info_read, False)
        loop.add_reader(self._info_read, self._on_info)

    def _on_info(self) -> None:
        if self._info_read is None:
            return
        try:
            chunk = os.read(self._info_read, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self._info += chunk
        if chunk and b"}" not in self._info and len(self._info) < 65_536:
            return
        self._stop_reading()
        if b"}" in self._info:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                info = json.loads(self._info[: self._info.index(b"}") + 1])
                self._adopt(int(info["child-pid"]))

    def _adopt(self, pid: int) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return  # already gone
        if _parent_of(pid) == self._launcher:  # the pidfd pins the process; not recycled
            self._pidfd = pidfd
        else:
            os.close(pidfd)

    def _stop_reading(self) -> None:
        if self._info_read is not None:
            asyncio.get_running_loop().remove_reader(self._info_read)
            os.close(self._info_read)
            self._info_read = None
        if self._info_done is not None and not self._info_done.done():
            self._info_done.set_result(None)

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        self._on_info()  # the namespace init may have been reported but not read yet
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        kill_group(process)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await process.wait()
        await self.wait_gone(5)

    async def wait_gone(self, grace: float) -> None:
        if self._info_done is not None and not self._info_done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._info_done), 1)
        if self._pidfd is None:
            return
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()

        def exited() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(self._pidfd, exited)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone, grace)
        finally:
            loop.remove_reader(self._pidfd)

    def close(self) -> None:
        self._close_write()
        if self._info_done is not None:
            self._stop_reading()
        elif self._info_read is not None:
            os.close(self._info_read)
            self._info_read = None
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _close_write(self) -> None:
        if self._info_write is not None:
            os.close(self._info_write)
            self._info_write = None


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return next((int(x.split()[1]) for x in f if x.startswith("PPid:")), None)
    except (OSError, ValueError):
        return None
