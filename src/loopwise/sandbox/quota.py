"""The workspace quota: bytes and entries a workspace may hold, watched while code runs.

A run may bring the workspace up to ``Limits.max_workspace_mb`` and
``Limits.max_workspace_files``; a workspace already over them may only shrink. While the
command runs, the filesystem's free blocks and inodes are read every 20 ms (one
``statvfs``); when they fall by more than the room left, the workspace is walked (bounded)
and the run is stopped if it is over; it is also walked every second (hard links add names
but neither blocks nor inodes). Writes between two readings can overshoot: at most what
the command writes in about 20 ms plus one walk. After the run, what it created beyond
the quota is removed, largest files first (never an entry that was there before). A part
of the tree the walk cannot see (nested deeper than it goes, or past its entry cap) is
judged by the filesystem counters alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .api import Limits
from .workspace import MAX_DEPTH, Node, Scan, inode_of, remove, remove_tree, scan

__all__ = ["QuotaWatch", "allowed", "describe", "prune_deep", "trim", "within"]

_MIB = 1024 * 1024
_POLL = 0.02
_WALK_EVERY = 0.2  # seconds between two confirming walks
_CHECK_EVERY = 1.0  # a walk at least this often (hard links add names, not blocks or inodes)
_BLIND_CHECK_EVERY = 0.5  # when the filesystem does not count inodes
_TRIM_SECONDS = 10.0  # at most this long removing a run's excess (one walk per round)


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
    after = scan(root, max_entries=cap, record=cap)
    deadline = time.monotonic() + _TRIM_SECONDS
    while time.monotonic() < deadline:
        if within(after, limit) or not before.recorded_all:
            break
        new = [(p, n) for p, n in after.nodes.items() if _created(root, p, n, before, after)]
        if not new:
            break
        gone = _remove_new(root, new, after, limit)
        removed += gone
        after = scan(root, max_entries=cap, record=cap)
        if not gone:
            break
    return removed, after


def prune_deep(root: Path, before: Scan, after: Scan) -> int:
    """Remove the trees the run made below the walk's depth (it cannot measure them);
    returns how many. Nothing is removed unless ``before`` saw the whole workspace."""
    if not before.recorded_all:
        return 0
    pruned = 0
    for rel in after.deep:
        ino = inode_of(root, rel)
        if ino is not None and not before.names_of(ino) and remove_tree(root, rel):
            pruned += 1
    return pruned


def _created(root: Path, path: str, node: Node, before: Scan, after: Scan) -> bool:
    """Whether the run made this name: a new inode, or one more name (hard link) for an
    old file that keeps one of its old names. An old name is never "made" (so a file the
    run appended to stays), nor the only name left of an old file (a rename)."""
    was = before.nodes.get(path)
    if was is not None and was.ino == node.ino:
        return False
    names = before.names_of(node.ino)
    if not names:
        return True
    if node.is_dir:
        return False
    for name in names[:8]:
        again = after.nodes.get(name)
        if (again.ino if again is not None else inode_of(root, name)) == node.ino:
            return True
    return False


def _remove_new(root: Path, new: list[tuple[str, Node]], usage: Scan, limit: _Allowed) -> int:
    size, entries, removed = usage.bytes, usage.entries + usage.capped, 0
    files = sorted((n for n in new if not n[1].is_dir), key=lambda n: n[1].bytes, reverse=True)
    dirs = sorted((n for n in new if n[1].is_dir), key=lambda n: n[0].count("/"), reverse=True)
    for path, node in [*files, *dirs]:
        if size <= limit.bytes and entries <= limit.entries:
            break
        if remove(root, path, directory=node.is_dir):
            size, entries, removed = size - node.bytes, entries - 1, removed + 1
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
            started = time.monotonic()
            last_walk: float | None = None
            while self.exceeded is None:
                await asyncio.sleep(_POLL)
                fs_over, counts_inodes = self._fs_growth(base)
                since = time.monotonic() - (started if last_walk is None else last_walk)
                every = _CHECK_EVERY if counts_inodes else _BLIND_CHECK_EVERY
                due = fs_over or since >= every
                if not due or (last_walk is not None and since < _WALK_EVERY):
                    continue
                usage = await asyncio.to_thread(
                    scan, self.root, max_entries=self.allowed.entries + 1, record=0, nodes=False
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
