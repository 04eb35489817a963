"""The workspace seen from the host: what changed during a run, and who may write it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["MAX_LISTED", "MAX_SCANNED", "Snapshot", "changed_files", "give_to", "snapshot"]

MAX_SCANNED = 20_000  # entries walked per snapshot; beyond that changes go unreported
MAX_LISTED = 200  # paths reported in files_written

Snapshot = dict[str, tuple[int, int]]


def snapshot(root: Path, limit: int = MAX_SCANNED) -> Snapshot:
    """``relative path -> (mtime_ns, size)`` of regular files, symlinks never followed."""
    found: Snapshot = {}
    stack = [root]
    seen = 0
    while stack and seen < limit:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > limit:
                break
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                stack.append(Path(entry.path))
            elif stat.S_ISREG(info.st_mode):
                rel = os.path.relpath(entry.path, root)
                found[rel] = (info.st_mtime_ns, info.st_size)
    return found


def changed_files(before: Snapshot, after: Snapshot, limit: int = MAX_LISTED) -> list[str]:
    """Paths new in ``after`` or with another mtime or size, sorted, at most ``limit``."""
    changed = sorted(path for path, sig in after.items() if before.get(path) != sig)
    if len(changed) > limit:
        extra = len(changed) - limit
        changed = [*changed[:limit], f"... and {extra} more"]
    return changed


def give_to(root: Path, uid: int, gid: int) -> int:
    """Make ``root`` and everything under it owned by ``uid:gid``; returns how many changed.

    Used when the host runs as root and the sandbox as an unprivileged uid, which must be
    able to write the workspace. The walk holds directory descriptors and never follows
    symlinks (a link planted in the workspace cannot redirect it), symlinks keep their
    owner, and a regular file with several hard links is skipped: one of its other names
    may lie outside the workspace.
    """
    changed = 0
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        changed += _give(top, None, uid, gid)
    finally:
        os.close(top)
    for _dirpath, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            changed += _give(dir_fd, name, uid, gid)
    return changed


def _give(dir_fd: int, name: str | None, uid: int, gid: int) -> int:
    try:
        if name is None:
            info = os.fstat(dir_fd)
        else:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if stat.S_ISLNK(info.st_mode) or (info.st_uid, info.st_gid) == (uid, gid):
        return 0
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        return 0
    if name is None:
        os.fchown(dir_fd, uid, gid)
    else:
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    return 1
