"""Run a program for a tool: no shell, a clean environment, a hard deadline, bounded output.

The child starts in its own session (so its whole process group can be killed), with stdin
closed and only the environment it is given. Both pipes are drained to the end while only a
head and a tail of each are kept, so a chatty child never blocks and never fills memory.
When the program exits, or the deadline passes, what is left of its process group is killed:
a tool call leaves nothing running behind it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_PATH", "ProcessResult", "minimal_env", "run_process"]

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_CHUNK = 65_536
_GRACE = 1.0
_WAIT_FLAGS = getattr(os, "WEXITED", 0) | getattr(os, "WNOWAIT", 0) | getattr(os, "WNOHANG", 0)
"""Seconds to keep reading after the program exits (its group is killed first)."""


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What a finished (or killed) program left: ``exit_code`` is None when it timed out."""

    exit_code: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool
    truncated: bool = False
    """Whether part of stdout or stderr was dropped to respect the cap."""


def minimal_env(
    extra: Mapping[str, str] | None = None, *, home: str | None = None
) -> dict[str, str]:
    """PATH, HOME and LANG only (never the host's secrets), plus ``extra``."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": home or os.environ.get("HOME") or "/",
        "LANG": "C.UTF-8",
    }
    env.update(extra or {})
    return env


class _Capture:
    """Keeps the first and last ``limit // 2`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int):
        self.head_limit = max(limit // 2, 1)
        self.tail_limit = max(limit - self.head_limit, 0)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_limit:
            self.tail += chunk
            del self.tail[: max(len(self.tail) - self.tail_limit, 0)]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        omitted = self.total - len(self.head) - len(self.tail)
        if omitted <= 0:
            return head + self.tail.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        return f"{head}\n... [truncated: {omitted} bytes omitted] ...\n{tail}"


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    max_output_chars: int,
    cwd: str | Path | None = None,
    stdin: int | None = None,
) -> ProcessResult:
    """Run ``argv`` (no shell) and wait at most ``timeout`` seconds; see the module docstring.

    ``stdin`` is a file descriptor to read from (default: none, the child gets EOF).
    Raises ``OSError`` when the program cannot be started and ``ValueError`` for an argument
    with a NUL byte.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    captures = {
        proc.stdout.fileno(): _Capture(max_output_chars),
        proc.stderr.fileno(): _Capture(max_output_chars),
    }
    try:
        timed_out = _drain(proc, captures, start + timeout)
    finally:
        _kill_group(proc.pid)  # before reaping: the group id cannot have been reused
        proc.stdout.close()
        proc.stderr.close()
        exit_code = proc.wait()
    out, err = captures.values()
    return ProcessResult(
        exit_code=None if timed_out else exit_code,
        stdout=out.text(),
        stderr=err.text(),
        duration=time.monotonic() - start,
        timed_out=timed_out,
        truncated=out.truncated or err.truncated,
    )


def _drain(proc: subprocess.Popen[bytes], captures: dict[int, _Capture], deadline: float) -> bool:
    """Read both pipes until the program exits and they close; True when the deadline passed."""
    with selectors.DefaultSelector() as selector, _ExitWatch(proc, selector) as watch:
        for fd in captures:
            selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if watch.exited_at is None and watch.check(now):
                # Orphans still holding the pipes must not keep the call alive.
                _kill_group(proc.pid)
            if watch.exited_at is not None:
                if not selector.get_map() or now - watch.exited_at > _GRACE:
                    return False
            elif now >= deadline:
                return True
            timeout = min(max(deadline - now, 0.0), watch.interval)
            if not selector.get_map():
                time.sleep(timeout)  # no pidfd and no pipes: poll for the exit
            for key, _ in selector.select(timeout) if selector.get_map() else ():
                if key.fd not in captures:
                    continue  # the pidfd: the exit is seen on the next turn
                chunk = os.read(key.fd, _CHUNK)
                if chunk:
                    captures[key.fd].feed(chunk)
                else:
                    selector.unregister(key.fd)


class _ExitWatch:
    """Sees the program exit without reaping it (so its pid, the group id, stays reserved);
    with a Linux pidfd in the selector the exit is an event, elsewhere it is polled."""

    def __init__(self, proc: subprocess.Popen[bytes], selector: selectors.BaseSelector):
        self.proc, self.selector = proc, selector
        self.exited_at: float | None = None
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(proc.pid)
            selector.register(self.pidfd, selectors.EVENT_READ)

    @property
    def interval(self) -> float:
        return 1.0 if self.pidfd is not None and self.exited_at is None else 0.02

    def check(self, now: float) -> bool:
        if hasattr(os, "waitid"):
            try:
                exited = os.waitid(os.P_PID, self.proc.pid, _WAIT_FLAGS) is not None
            except ChildProcessError:
                exited = True
        else:  # pragma: no cover - macOS before Python 3.13
            exited = self.proc.poll() is not None
        if exited:
            self.exited_at = now
            self._close()
        return exited

    def _close(self) -> None:
        if self.pidfd is not None:
            self.selector.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def __enter__(self) -> _ExitWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
