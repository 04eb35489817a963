"""Run plain ``def`` tools off the event loop on threads that a hung call cannot pin.

``asyncio.to_thread`` has two faults for tools: a timeout only stops waiting (the call
keeps its executor thread, so a few hung calls starve every later one), and
``asyncio.run`` joins the default executor on shutdown (so a hung call holds the program
open). :class:`SyncRunner` owns daemon worker threads instead. A call that times out or
is cancelled is *abandoned*: its thread leaves the runner's pool (a fresh worker takes
its place) and exits whenever the function returns, its result discarded. Abandoned
threads still running are capped process-wide (:data:`MAX_ABANDONED`); past the cap a new
call fails at once rather than starting yet another thread.

A call is handed to a worker through a ``queue.SimpleQueue`` and its result comes back
with ``loop.call_soon_threadsafe`` (no executor, no ``concurrent.futures`` wrapping).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "DEFAULT_IDLE_SECONDS",
    "DEFAULT_MAX_WORKERS",
    "MAX_ABANDONED",
    "SyncRunner",
    "ToolExit",
    "ToolThreadsExhausted",
    "abandoned_threads",
    "default_runner",
    "tool_exit",
]

DEFAULT_MAX_WORKERS: Final = 16
"""Calls of one runner running at once; more wait in its queue."""
DEFAULT_IDLE_SECONDS: Final = 5.0
"""A worker with nothing to do for this long exits."""
MAX_ABANDONED = 64
"""Timed-out or cancelled calls still running, process-wide, past which new calls fail."""


class ToolExit(RuntimeError):
    """A tool raised ``SystemExit`` or ``KeyboardInterrupt``: an error, not the run's end."""


class ToolThreadsExhausted(RuntimeError):
    """Too many abandoned (timed-out) sync tool calls are still running in their threads."""


def tool_exit(exc: SystemExit | KeyboardInterrupt) -> ToolExit:
    """The ordinary error that stands for a tool's ``sys.exit()`` or ``KeyboardInterrupt``."""
    if isinstance(exc, SystemExit):
        return ToolExit(f"the tool called sys.exit({exc.code!r})")
    return ToolExit("the tool raised KeyboardInterrupt")


# ---------------------------------------------------------------------------------------
# Process-wide count of abandoned threads still running

_abandoned_lock = threading.Lock()
_abandoned = 0


def abandoned_threads() -> int:
    """How many abandoned calls (timed out or cancelled) are still running, process-wide."""
    return _abandoned


def _add_abandoned(delta: int) -> None:
    global _abandoned
    with _abandoned_lock:
        _abandoned += delta


def _check_abandoned() -> None:
    count, limit = _abandoned, MAX_ABANDONED
    if count >= limit:
        raise ToolThreadsExhausted(
            f"{count} timed-out or cancelled sync tool calls are still running (the limit is "
            f"{limit}), so no new sync tool call can start until some of them return."
        )


# ---------------------------------------------------------------------------------------
# One call

_PENDING, _RUNNING, _DONE, _ABANDONED = range(4)


class _Job:
    """One call: the function, where its result goes, and how far it got."""

    __slots__ = ("context", "fn", "future", "kwargs", "loop", "state")

    def __init__(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fn = fn
        self.kwargs = kwargs
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.context = contextvars.copy_context()
        self.state = _PENDING

    def execute(self) -> tuple[bool, Any]:
        """Run the function in the caller's context: ``(ok, value or exception)``."""
        try:
            return True, self.context.run(self.fn, **self.kwargs)
        except (SystemExit, KeyboardInterrupt, StopIteration) as exc:
            error = tool_exit(exc) if not isinstance(exc, StopIteration) else _stop_iteration()
            error.__cause__ = exc
            return False, error
        except BaseException as exc:
            return False, exc

    def post(self, ok: bool, value: Any) -> None:
        """Hand the outcome to the caller's event loop (unless it is gone)."""
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, ok, value)
        except RuntimeError:  # the loop was closed; nobody is waiting
            pass


def _stop_iteration() -> RuntimeError:
    """A future cannot hold ``StopIteration``; this error stands for it."""
    return RuntimeError("the tool raised StopIteration")


def _call_inline(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(**kwargs)
    except (SystemExit, KeyboardInterrupt) as exc:
        raise tool_exit(exc) from exc


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _Stop:
    """Wakes an idle worker so it can exit (see :meth:`SyncRunner.close`)."""


_STOP: Final = _Stop()


# ---------------------------------------------------------------------------------------
# The runner


class SyncRunner:
    """Runs sync functions on daemon threads it owns; see the module docstring.

    At most ``max_workers`` calls run at once (more wait, in order); a call that times out
    or is cancelled stops counting at once. Workers idle for ``idle_seconds`` exit.

    ``inline`` (opt-in, off by default) picks functions to call directly on the event loop,
    skipping the thread hop (10-170 µs). Only for functions that are always quick and never
    block: while one runs, every other task on the loop waits (in a server: every run and
    the health check), and no timeout can stop it.
    """

    def __init__(
        self,
        max_workers: int = DEFAULT_MAX_WORKERS,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        inline: Callable[[Callable[..., Any]], bool] | None = None,
        name: str = "loopwise-tool",
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self.max_workers = max_workers
        self._inline = inline
        self.idle_seconds = idle_seconds
        self.name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | _Stop] = queue.SimpleQueue()
        self._workers = 0  # threads in the pool (idle or running a live call)
        self._idle = 0  # of those, the ones not running a call
        self._pending = 0  # calls queued and not yet taken or abandoned
        self._closed = False
        self._numbers = itertools.count(1)
        _runners.add(self)

    # -- the caller's side (event loop thread) ---------------------------------------

    async def run(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        timeout: float | None,  # noqa: ASYNC109 (only the runner can abandon the thread)
    ) -> Any:
        """``fn(**kwargs)`` on a worker thread, within ``timeout`` seconds if given.

        Raises what ``fn`` raised (``SystemExit``/``KeyboardInterrupt`` as :class:`ToolExit`),
        ``TimeoutError`` on timeout, :class:`ToolThreadsExhausted` when too many abandoned
        calls are still running. A timed-out or cancelled call is abandoned, not stopped.
        A function the ``inline`` predicate accepts runs on the event loop itself, unless
        it has a timeout (which only a thread can enforce).
        """
        if timeout is None and self._inline is not None and self._inline(fn):
            return _call_inline(fn, kwargs)
        job = self._submit(fn, kwargs)
        timer = None if timeout is None else job.loop.call_later(timeout, self._expire, job)
        try:
            return await job.future
        except asyncio.CancelledError:
            self._abandon(job)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, job: _Job) -> None:
        """The call's time is up: abandon it and fail its future with ``TimeoutError``.

        A call that finished just now (its result on the way) is let through.
        """
        if not job.future.done() and self._abandon(job):
            job.future.set_exception(TimeoutError())

    def _submit(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> _Job:
        if self._closed:
            raise RuntimeError("this SyncRunner is closed; make a new one")
        _check_abandoned()
        job = _Job(fn, kwargs, asyncio.get_running_loop())
        with self._lock:
            self._pending += 1
            spawn = self._wants_worker()
        self._queue.put(job)
        if spawn and not self._spawn() and self._workers == 0:
            self._abandon(job)
            raise ToolThreadsExhausted("no thread could be started for the sync tool call.")
        return job

    def _wants_worker(self) -> bool:
        """Under the lock: whether queued calls outnumber idle workers and there is room.

        Counts the new worker as idle at once, so two callers never both start one.
        """
        if self._pending > self._idle and self._workers < self.max_workers:
            self._workers += 1
            self._idle += 1
            return True
        return False

    def _spawn(self) -> bool:
        """Start a worker already counted by :meth:`_wants_worker`; False if none started."""
        name = f"{self.name}-{next(self._numbers)}"
        try:
            threading.Thread(target=self._work, name=name, daemon=True).start()
        except RuntimeError:  # "can't start new thread": the process is out of threads
            with self._lock:
                self._workers -= 1
                self._idle -= 1
            return False
        return True

    def _abandon(self, job: _Job) -> bool:
        """Give up on ``job``: its queue slot or its thread stops counting.

        False when it had already finished (or been abandoned).
        """
        with self._lock:
            if job.state == _PENDING:
                job.state = _ABANDONED
                self._pending -= 1
                return True
            if job.state != _RUNNING:
                return False
            job.state = _ABANDONED
            self._workers -= 1
            _add_abandoned(1)
            spawn = self._wants_worker()
        if spawn:
            self._spawn()
        return True

    def close(self) -> None:
        """Let idle workers exit now and busy ones after their call; refuse new calls."""
        with self._lock:
            self._closed = True
            idle = self._idle
        for _ in range(idle):
            self._queue.put(_STOP)

    def __enter__(self) -> SyncRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def workers(self) -> int:
        """Threads in the pool now (abandoned calls' threads are not counted)."""
        return self._workers

    # -- the worker's side ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                item = _STOP
            if isinstance(item, _Stop):
                if self._retire():
                    return
                continue
            if not self._claim(item):
                continue
            ok, value = item.execute()
            if not self._finish(item, ok, value):
                return

    def _claim(self, job: _Job) -> bool:
        with self._lock:
            if job.state != _PENDING:  # abandoned while it waited
                return False
            job.state = _RUNNING
            self._pending -= 1
            self._idle -= 1
            return True

    def _finish(self, job: _Job, ok: bool, value: Any) -> bool:
        """Record the outcome; False when this thread must exit (abandoned, or closing)."""
        with self._lock:
            if job.state == _ABANDONED:
                _add_abandoned(-1)
                return False
            job.state = _DONE
            self._idle += 1
            leave = self._closed and self._retire_locked()
        job.post(ok, value)
        return not leave

    def _retire(self) -> bool:
        """Whether this idle worker may exit (not while queued calls need it)."""
        with self._lock:
            return self._retire_locked()

    def _retire_locked(self) -> bool:
        if self._pending > self._idle - 1:
            return False
        self._idle -= 1
        self._workers -= 1
        return True

    def _after_fork(self) -> None:
        """In a forked child the parent's threads do not exist: start from nothing."""
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._workers = self._idle = self._pending = 0


# ---------------------------------------------------------------------------------------
# The default runner and fork safety

_runners: weakref.WeakSet[SyncRunner] = weakref.WeakSet()
_default: SyncRunner | None = None
_default_lock = threading.Lock()


def default_runner() -> SyncRunner:
    """The process-wide runner used when a caller passes none."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = SyncRunner(name="loopwise-tool-default")
    return _default


def _reset_after_fork() -> None:
    global _abandoned, _abandoned_lock, _default_lock
    _abandoned_lock = threading.Lock()
    _default_lock = threading.Lock()
    _abandoned = 0
    for runner in list(_runners):
        runner._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
