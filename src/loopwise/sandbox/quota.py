"""The workspace quota: bytes and entries a workspace may hold, watched while code runs.

A run may bring the workspace up to ``Limits.max_workspace_mb`` and
``Limits.max_workspace_files``; a workspace already over them may only shrink. While the
command runs, the filesystem's free blocks and inodes are read every 20 ms (one
``statvfs``); when they fall by more than the room left, the workspace is walked (bounded)
and the run is stopped if it is over. Writes between two readings can overshoot: at most
what the command writes in about 20 ms plus one walk. A part of the tree the walk cannot
see (nested deeper than it goes, or past its entry cap) is judged by the filesystem
counters alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .api import Limits
from .workspace import MAX_DEPTH, Scan, remove, scan

__all__ = ["QuotaWatch", "allowed", "describe", "trim", "within"]

_MIB = 1024 * 1024
_POLL = 0.02
_WALK_EVERY = 0.2  # seconds between two confirming walks
_BLIND_WALK_EVERY = 0.5  # walks when the filesystem does not count inodes
_TRIM_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class _Allowed:
    bytes: int
    entries: int


def allowed(limits: Limits, start: Scan) -> _Allowed:
    """What the workspace may hold at the end of a run that started at ``start``."""
    return _Allowed(
        max(limits.max_workspace_mb * _MIB, start.bytes),
        max(limits.max_workspace_files, start.entries),
    )


def within(usage: Scan, limit: _Allowed) -> bool:
    return not usage.capped and usage.entries <= limit.entries and usage.bytes <= limit.bytes


def trim(root: Path, before: Scan, limit: _Allowed, cap: int) -> tuple[int, Scan]:
    """Remove what the run created (largest files first, then its empty directories) until
    the workspace is within ``limit``; returns how many entries went, and a new walk (of
    at most ``cap`` entries).

    Nothing is removed unless ``before`` recorded every entry, so that only entries the
    run created (inodes not there before) can go.
    """
    removed = 0
    old = {node[0] for node in before.nodes.values()}
    after = scan(root, max_entries=cap, record=cap)
    for _ in range(_TRIM_ROUNDS):
        if within(after, limit) or not before.recorded_all:
            break
        new = [(p, node) for p, node in after.nodes.items() if node[0] not in old]
        if not new:
            break
        removed += _remove_new(root, new, after, limit)
        after = scan(root, max_entries=cap, record=cap)
    return removed, after


def _remove_new(
    root: Path, new: list[tuple[str, tuple[int, int, bool]]], usage: Scan, limit: _Allowed
) -> int:
    size, entries, removed = usage.bytes, usage.entries + usage.capped, 0
    files = sorted((n for n in new if not n[1][2]), key=lambda n: n[1][1], reverse=True)
    dirs = sorted((n for n in new if n[1][2]), key=lambda n: n[0].count("/"), reverse=True)
    for path, (_, used, is_dir) in [*files, *dirs]:
        if size <= limit.bytes and entries <= limit.entries:
            break
        if remove(root, path, directory=is_dir):
            size, entries, removed = size - used, entries - 1, removed + 1
    return removed


def _mb(n: int) -> str:
    return f"{n / _MIB:.1f} MB"


def describe(usage: Scan, limits: Limits) -> str | None:
    """One or two sentences for the model when the workspace is over a limit, else None."""
    problems = []
    over_bytes = usage.bytes > limits.max_workspace_mb * _MIB
    over_entries = usage.capped or usage.entries > limits.max_workspace_files
    if over_bytes or over_entries:
        entries = f"more than {usage.entries:,}" if usage.capped else f"{usage.entries:,}"
        problems.append(
            f"The workspace is over its quota: {_mb(usage.bytes)} in {entries} files and "
            f"directories (limits: {limits.max_workspace_mb} MB, "
            f"{limits.max_workspace_files:,} entries); delete files, since until then a "
            "run may not add to it."
        )
    if usage.too_deep:
        problems.append(
            f"The workspace has directories nested more than {MAX_DEPTH} levels deep, "
            "which are not measured: delete them (rm -rf DIR)."
        )
    return " ".join(problems) or None


class QuotaWatch:
    """Watches the workspace while a command runs; sets ``stop`` when it goes over."""

    def __init__(self, root: Path, limits: Limits, start: Scan) -> None:
        self.root = root
        self.limits = limits
        self.allowed = allowed(limits, start)
        self.room_bytes = self.allowed.bytes - start.bytes
        self.room_entries = self.allowed.entries - start.entries
        self.blind = not start.complete
        self.exceeded: str | None = None

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll until cancelled, or until the workspace is over (then ``stop`` is set)."""
        with contextlib.suppress(OSError):
            base = os.statvfs(self.root)
            last_walk = -_WALK_EVERY
            while self.exceeded is None:
                await asyncio.sleep(_POLL)
                fs_over, counts_inodes = self._fs_growth(base)
                since = time.monotonic() - last_walk
                due = fs_over or (not counts_inodes and since >= _BLIND_WALK_EVERY)
                if not due or since < _WALK_EVERY:
                    continue
                usage = await asyncio.to_thread(
                    scan, self.root, max_entries=self.allowed.entries + 1, record=0
                )
                last_walk = time.monotonic()
                self.exceeded = self._judge(usage, fs_over)
            stop.set()

    def _fs_growth(self, base: os.statvfs_result) -> tuple[bool, bool]:
        """Whether the filesystem grew by more than the room left; whether it counts inodes."""
        now = os.statvfs(self.root)
        grew = (base.f_bfree - now.f_bfree) * now.f_frsize
        counts_inodes = base.f_files > 0
        more_inodes = counts_inodes and base.f_ffree - now.f_ffree > self.room_entries
        return grew > self.room_bytes or more_inodes, counts_inodes

    def _judge(self, usage: Scan, fs_over: bool) -> str | None:
        if usage.capped or usage.entries > self.allowed.entries:
            return f"more than {self.allowed.entries:,} files and directories"
        if usage.bytes > self.allowed.bytes:
            return f"more than {_mb(self.allowed.bytes)}"
        if fs_over and (self.blind or usage.too_deep):
            return f"more than {_mb(self.allowed.bytes)} (counted by the filesystem)"
        return None

    def verdict(self) -> str | None:
        """Why the run was stopped, as a sentence, or None."""
        if self.exceeded is None:
            return None
        return (
            f"The run was stopped: the workspace grew to {self.exceeded}, over its quota "
            f"({self.limits.max_workspace_mb} MB, {self.limits.max_workspace_files:,} "
            "entries)."
        )
