"""Run a sandbox launcher as a child process: capped output, wall-clock limit, sure kill.

The backends build the command line; this module owns the lifecycle. Output is read
concurrently and kept up to a cap (the rest is read and dropped, so the child never blocks
on a full pipe). On timeout or cancellation a backend-specific :class:`Terminator` kills
the whole tree and waits until it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Outcome", "Terminator", "decode_capped", "kill_group", "run_process", "signal_verdict"]

_CHUNK = 65_536
_DRAIN_GRACE = 5.0  # seconds to collect the last output once the launcher has exited


class Terminator(Protocol):
    """Kills everything a launcher started and waits (bounded) until it is gone."""

    def started(self, process: asyncio.subprocess.Process) -> None:
        """Called once the launcher runs."""

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        """Kill the whole tree now (signals go out before the first ``await``)."""

    async def wait_gone(self, grace: float) -> None:
        """Return once every process of the run has exited (or ``grace`` seconds passed)."""

    def close(self) -> None:
        """Release what ``started`` acquired."""


@dataclass(slots=True)
class _Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_CHUNK):
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            self.dropped += max(0, len(chunk) - max(room, 0))


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the launcher process ended, with its (capped) output."""

    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool
    stopped: bool = False
    """Killed because the caller's ``stop`` event was set."""


def decode_capped(data: bytes, dropped: int) -> str:
    """UTF-8 text (bad bytes replaced) with a marker saying how much was cut."""
    text = data.decode("utf-8", errors="replace")
    if dropped:
        text += f"\n... [truncated: {dropped} more bytes]"
    return text


def signal_verdict(exit_code: int | None) -> str | None:
    """``killed_by`` from a ``128 + N`` exit status (the convention bwrap and docker use)."""
    if exit_code is None or not 128 < exit_code < 128 + 65:
        return None
    number = exit_code - 128
    if number == signal.SIGXCPU:
        return "cpu"
    if number == signal.SIGXFSZ:
        return "file_size"
    try:
        return f"signal:{signal.Signals(number).name}"
    except ValueError:
        return None


async def _feed(process: asyncio.subprocess.Process, data: bytes) -> None:
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.write(data)
        await process.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.close()


async def run_process(
    argv: Sequence[str],
    *,
    terminator: Terminator,
    stdin: bytes | None,
    wall_seconds: float,
    max_output_bytes: int,
    env: dict[str, str],
    pass_fds: Sequence[int] = (),
    stop: asyncio.Event | None = None,
) -> Outcome:
    """Run ``argv``; past ``wall_seconds``, when ``stop`` is set, or when cancelled, kill its
    whole tree."""
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    except BaseException:
        terminator.close()
        raise
    terminator.started(process)
    out, err = _Capture(max_output_bytes), _Capture(max_output_bytes)
    tasks = [
        asyncio.create_task(out.drain(process.stdout)),
        asyncio.create_task(err.drain(process.stderr)),
    ]
    if stdin is not None:
        tasks.append(asyncio.create_task(_feed(process, stdin)))
    timed_out = stopped = False
    try:
        try:
            async with asyncio.timeout(wall_seconds):
                stopped = await _wait(process, stop)
        except TimeoutError:
            timed_out = True
        if timed_out or stopped:
            await terminator.kill(process)
        await terminator.wait_gone(_DRAIN_GRACE)
        await asyncio.wait(tasks, timeout=_DRAIN_GRACE)
    except BaseException:
        # Cancelled (or failed): the tree must not outlive the caller.
        await terminator.kill(process)
        raise
    finally:
        terminator.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Outcome(
        returncode=None if timed_out else process.returncode,
        stopped=stopped,
        stdout=decode_capped(bytes(out.data), out.dropped),
        stderr=decode_capped(bytes(err.data), err.dropped),
        duration=time.monotonic() - started,
        timed_out=timed_out,
    )


async def _wait(process: asyncio.subprocess.Process, stop: asyncio.Event | None) -> bool:
    """Wait for the launcher to exit; True when ``stop`` was set first."""
    if stop is None:
        await process.wait()
        return False
    exited = asyncio.ensure_future(process.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((exited, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (exited, stopping):
            task.cancel()
    return stop.is_set() and process.returncode is None


def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the launcher's process group (it leads its own session)."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
