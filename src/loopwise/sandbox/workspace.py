"""The workspace seen from the host: one bounded walk for what changed, how much it holds,
and (when the host is root) handing it to the sandbox uid.

The walk is iterative and descriptor-based (``openat`` with ``O_NOFOLLOW``): it never
follows a symlink, never builds a path longer than one name, holds at most one descriptor
per level, and stops at ``max_depth`` levels and ``max_entries`` entries. A tree deeper
than that, or with more entries, is reported (``too_deep``, ``capped``) instead of raising,
so a hostile tree can neither crash nor slow down later runs beyond the caps.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

__all__ = [
    "MAX_DEPTH",
    "MAX_LISTED",
    "MAX_SCANNED",
    "Node",
    "Scan",
    "Snapshot",
    "changed_files",
    "give_to",
    "inode_of",
    "remove",
    "remove_tree",
    "scan",
    "snapshot",
]

MAX_SCANNED = 20_000  # files recorded per snapshot; beyond that changes go unreported
MAX_LISTED = 200  # paths reported in files_written
MAX_DEPTH = 64  # directory levels walked; deeper ones are reported, not entered
MAX_ENTRIES = 1_000_000  # entries walked at most, whatever the caller asks

_MAX_SPECIALS = 16
_T = TypeVar("_T")


class Node(NamedTuple):
    """One entry; its inode tells a file that was there (renamed, appended to) from a new one."""

    ino: int
    bytes: int
    is_dir: bool


Snapshot = dict[str, tuple[int, int]]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(slots=True)
class Scan:
    """What one walk saw: files (for ``changed_files``), usage, and whether it saw it all."""

    files: Snapshot = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    """Every entry by path (as many as ``record``)."""
    entries: int = 0
    """Entries (names of files, directories, links...) below the root."""
    bytes: int = 0
    """Disk space they use (allocated blocks), a file with several names counted once."""
    too_deep: bool = False
    """A directory lies deeper than ``max_depth``: what is below it was not seen."""
    capped: bool = False
    """The walk stopped at ``max_entries``."""
    chowned: int = 0
    specials: list[str] = field(default_factory=list)
    """The first few entries that are neither regular files nor directories (links...)."""
    deep: list[str] = field(default_factory=list)
    """The first few directories at ``max_depth`` that were not entered."""
    _by_inode: dict[int, list[str]] | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        """Whether the walk saw the whole tree."""
        return not (self.too_deep or self.capped)

    def names_of(self, ino: int) -> list[str]:
        """The recorded names of inode ``ino``."""
        if self._by_inode is None:
            self._by_inode = {}
            for path, node in self.nodes.items():
                self._by_inode.setdefault(node.ino, []).append(path)
        return self._by_inode.get(ino, [])

    @property
    def recorded_all(self) -> bool:
        """Whether every entry is in ``nodes`` (what a later walk finds new is new)."""
        return self.complete and len(self.nodes) == self.entries


@dataclass(slots=True)
class _Walk:
    result: Scan
    max_entries: int
    max_depth: int
    record: int
    owner: tuple[int, int] | None
    nodes: bool
    inodes: set[int] = field(default_factory=set)

    @property
    def room(self) -> int:
        """Entries left before the cap (one more, to notice the cap)."""
        return self.max_entries - self.result.entries + 1

    def visit(self, dir_fd: int, name: str, rel: str, info: os.stat_result) -> None:
        result = self.result
        size = info.st_blocks * 512 if hasattr(info, "st_blocks") else info.st_size
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            if info.st_ino in self.inodes:
                size = 0  # another name of a file already counted
            self.inodes.add(info.st_ino)
        result.entries += 1
        result.bytes += size
        if self.nodes and len(result.nodes) < self.record:
            result.nodes[rel] = Node(info.st_ino, size, stat.S_ISDIR(info.st_mode))
        if stat.S_ISREG(info.st_mode) and len(result.files) < self.record:
            result.files[rel] = (info.st_mtime_ns, info.st_size)
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            if len(result.specials) < _MAX_SPECIALS:
                result.specials.append(rel)
        if self.owner is not None and _owned_elsewhere(info, self.owner):
            try:
                os.chown(name, *self.owner, dir_fd=dir_fd, follow_symlinks=False)
                result.chowned += 1
            except FileNotFoundError:
                pass


def scan(
    root: Path,
    *,
    max_entries: int = MAX_SCANNED,
    max_depth: int = MAX_DEPTH,
    record: int = MAX_SCANNED,
    owner: tuple[int, int] | None = None,
    nodes: bool = True,
) -> Scan:
    """Walk ``root`` (see the module docstring); ``owner`` chowns what is not yet theirs.
    ``record`` bounds the files (and, with ``nodes``, the entries) kept in the result.

    Symlinks keep their owner and a regular file with several hard links is not chowned:
    one of its other names may lie outside the workspace.
    """
    walk = _Walk(Scan(), min(max_entries, MAX_ENTRIES), max_depth, record, owner, nodes)
    top = os.open(root, _DIR_FLAGS)
    try:
        if owner is not None and _owned_elsewhere(os.fstat(top), owner):
            os.fchown(top, *owner)
            walk.result.chowned += 1
        _descend(walk, top)
    finally:
        os.close(top)
    return walk.result


def _descend(walk: _Walk, top: int) -> None:
    """Depth first, one open descriptor per level; ``top`` stays the caller's."""
    stack: list[tuple[int, str, list[str]]] = [(top, "", _names(top, walk.room))]
    try:
        while stack:
            fd, prefix, pending = stack[-1]
            if not pending:
                stack.pop()
                if fd != top:
                    os.close(fd)
                continue
            child = _enter(walk, fd, prefix, pending.pop(), len(stack))
            if child is not None:
                stack.append(child)
            if walk.result.capped:
                return
    finally:
        for fd, _, _ in stack:
            if fd != top:
                os.close(fd)


def _enter(
    walk: _Walk, fd: int, prefix: str, name: str, depth: int
) -> tuple[int, str, list[str]] | None:
    """Visit one entry; for a directory that may be walked, its (fd, path, names)."""
    if walk.result.entries >= walk.max_entries:
        walk.result.capped = True
        return None
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    rel = prefix + name
    walk.visit(fd, name, rel, info)
    if not stat.S_ISDIR(info.st_mode):
        return None
    if depth >= walk.max_depth:
        walk.result.too_deep = True
        if len(walk.result.deep) < _MAX_SPECIALS:
            walk.result.deep.append(rel)
        return None
    try:
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
    except OSError:
        return None
    try:
        return child, rel + "/", _names(child, walk.room)
    except BaseException:
        os.close(child)
        raise


def _names(fd: int, limit: int) -> list[str]:
    """At most ``limit`` names from the directory (a huge one is not read to its end)."""
    try:
        with os.scandir(fd) as entries:
            return [entry.name for entry in itertools.islice(entries, max(limit, 1))]
    except OSError:
        return []


def remove(root: Path, rel: str, *, directory: bool = False) -> bool:
    """Unlink ``rel`` (or rmdir it, if empty) below ``root``, never following a symlink on
    the way; True when it was removed."""
    unlink = os.rmdir if directory else os.unlink

    def act(name: str, dir_fd: int) -> bool:
        unlink(name, dir_fd=dir_fd)
        return True

    return _at(root, rel, act) is not None


def remove_tree(root: Path, rel: str, *, timeout: float = 30.0) -> bool:
    """``rm -rf`` of ``rel`` below ``root``, however deep, never following a link: rm runs
    in the parent directory, reached one descriptor at a time. Linux only (else False)."""
    if not rel or not os.path.isdir("/proc/self/fd"):
        return False

    def act(leaf: str, dir_fd: int) -> bool:
        done = subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", leaf],
            cwd=f"/proc/self/fd/{dir_fd}",  # resolved in the child, where dir_fd is open
            pass_fds=(dir_fd,),
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return done.returncode == 0

    try:
        return bool(_at(root, rel, act))
    except (OSError, subprocess.TimeoutExpired):
        return False


def inode_of(root: Path, rel: str) -> int | None:
    """The inode of ``rel`` below ``root`` (links not followed, on the way or at the end)."""
    info = _at(root, rel, lambda name, dir_fd: os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    return None if info is None else info.st_ino


def _at(root: Path, rel: str, action: Callable[..., _T]) -> _T | None:
    """``action(name, dir_fd=...)`` on ``rel``, reached one directory at a time without
    following links; None when a step fails."""
    *parents, name = rel.split("/")
    opened: list[int] = []
    try:
        fd = os.open(root, _DIR_FLAGS)
        opened.append(fd)
        for part in parents:
            fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            opened.append(fd)
        return action(name, dir_fd=fd)
    except OSError:
        return None
    finally:
        for fd in opened:
            os.close(fd)


def _owned_elsewhere(info: os.stat_result, owner: tuple[int, int]) -> bool:
    if stat.S_ISLNK(info.st_mode) or (info.st_uid, info.st_gid) == owner:
        return False
    return not (stat.S_ISREG(info.st_mode) and info.st_nlink > 1)


def snapshot(root: Path, limit: int = MAX_SCANNED) -> Snapshot:
    """``relative path -> (mtime_ns, size)`` of regular files, symlinks never followed."""
    return scan(root, max_entries=limit, record=limit, nodes=False).files


def changed_files(before: Snapshot, after: Snapshot, limit: int = MAX_LISTED) -> list[str]:
    """Paths new in ``after`` or with another mtime or size, sorted, at most ``limit``."""
    changed = sorted(path for path, sig in after.items() if before.get(path) != sig)
    if len(changed) > limit:
        extra = len(changed) - limit
        changed = [*changed[:limit], f"... and {extra} more"]
    return changed


def give_to(root: Path, uid: int, gid: int, *, max_entries: int = MAX_ENTRIES) -> int:
    """Make ``root`` and everything under it owned by ``uid:gid``; returns how many changed.

    Used when the host runs as root and the sandbox as an unprivileged uid, which must be
    able to write the workspace. Bounded like :func:`scan`, which does the work.
    """
    return scan(root, max_entries=max_entries, record=0, owner=(uid, gid), nodes=False).chowned
