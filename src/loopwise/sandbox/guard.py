"""Keeps host-side readers of a directory tree and sandboxed code on it from overlapping.

A sandboxed run can plant symlinks or rewrite ``.git`` in its workspace while it runs; a
host-side reader (the git tools) checks the tree first and must not have it change under it
between the check and the read; and two runs on one workspace would count each other's
files against its quota. So, within this process, a sandboxed run waits while anyone holds
a tree that contains, or lies inside, its workspace, and a reader waits while a sandboxed
run holds one; readers share trees with each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

__all__ = ["READER", "SANDBOX", "TreeBusy", "hold", "hold_async"]

SANDBOX = "sandbox"
READER = "reader"
_POLL = 0.01


class TreeBusy(TimeoutError):
    """The tree stayed held by the other kind for the whole wait."""


_lock = threading.Condition()
_held: dict[tuple[str, str], int] = {}


def _inside(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def _overlaps(a: str, b: str) -> bool:
    return _inside(a, b) or _inside(b, a)


def _free(kind: str, path: str) -> bool:
    exclusive = kind == SANDBOX
    return not any((exclusive or k != kind) and _overlaps(path, p) for (k, p) in _held)


def _take(kind: str, path: str) -> None:
    _held[kind, path] = _held.get((kind, path), 0) + 1


def _release(kind: str, path: str) -> None:
    with _lock:
        left = _held[kind, path] - 1
        if left:
            _held[kind, path] = left
        else:
            del _held[kind, path]
        _lock.notify_all()


@contextlib.contextmanager
def hold(kind: str, path: Path | str, *, timeout: float) -> Iterator[None]:
    """Hold ``path`` (resolved) as ``kind``, waiting up to ``timeout`` seconds (else
    :class:`TreeBusy`)."""
    key = os.fspath(path)
    deadline = time.monotonic() + timeout
    with _lock:
        while not _free(kind, key):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TreeBusy(f"{key!r} stayed busy for {timeout:g} s.")
            _lock.wait(left)
        _take(kind, key)
    try:
        yield
    finally:
        _release(kind, key)


@contextlib.asynccontextmanager
async def hold_async(kind: str, path: Path | str) -> AsyncIterator[None]:
    """Hold ``path`` (resolved) as ``kind`` from a coroutine, as long as needed to wait."""
    key = os.fspath(path)
    while True:
        with _lock:
            if _free(kind, key):
                _take(kind, key)
                break
        await asyncio.sleep(_POLL)
    try:
        yield
    finally:
        _release(kind, key)
