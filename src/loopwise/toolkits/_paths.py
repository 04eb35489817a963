"""Paths confined to a workspace: resolve and check first, then open without following links.

A path from the model is resolved (``~``, absolute, ``..``, symbolic links) and must stay
inside the workspace. It is then opened by walking from a descriptor of the workspace one
component at a time with ``O_NOFOLLOW``, so a symbolic link swapped in after the check makes
the open fail (``ELOOP``/``ENOTDIR``) instead of escaping. A regular file with more than one
name may be a hard link to a file outside the workspace; it is refused unless allowed.
Resolving and walking are iterative and bounded (links followed, depth, entries listed), so
a 1,200-deep tree or a chain of 1,000 links costs a clear message, never a RecursionError.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from ..errors import ModelRetry, UsageError

__all__ = [
    "DIR_FLAGS",
    "READ_FLAGS",
    "Target",
    "Walk",
    "Workspace",
    "lstat_at",
    "path_error",
    "real_path",
    "shown",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
"""Read-only and never blocking: a FIFO that slips past the checks cannot hang the tool."""
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
MAX_LINKS = 40
"""Symbolic links followed while resolving one path, as Linux allows (``ELOOP`` after)."""


def shown(path: str) -> str:
    """The model's path as it appears in messages: quoted, escaped, and not too long."""
    return repr(path if len(path) <= 200 else path[:200] + "...")


def path_error(path: str, exc: OSError) -> ModelRetry:
    """One sentence for the model: what is wrong with ``path`` and what to do."""
    p = shown(path)
    messages = {
        errno.ENOENT: f"{p} does not exist in the workspace; check the name with list_dir or "
        "find_files.",
        errno.ENOTDIR: f"{p} is not a directory, or a part of it is a file; check the path "
        "with list_dir.",
        errno.EISDIR: f"{p} is a directory; use list_dir or find_files for directories.",
        errno.ELOOP: f"{p} goes through a symbolic link that is not allowed here (it changed "
        "or it leads outside the workspace); use the real path inside the workspace.",
        errno.EEXIST: f"{p} already exists.",
        errno.ENAMETOOLONG: f"{p} is too long for a file name; use a shorter path.",
        errno.EACCES: f"permission denied for {p}; use another file.",
        errno.EPERM: f"the operation is not permitted on {p}; use another file.",
        errno.ENXIO: f"{p} is not a regular file; only regular files can be used.",
    }
    reason = exc.strerror or type(exc).__name__
    return ModelRetry(messages.get(exc.errno or 0, f"cannot access {p}: {reason}."))


@dataclass(frozen=True, slots=True)
class Target:
    """A checked path: its components below the workspace root (no links, no ``..``)."""

    path: str
    """The path as the model wrote it, for messages."""
    parts: tuple[str, ...]

    @property
    def rel(self) -> str:
        """The path relative to the workspace root, ``"."`` for the root itself."""
        return "/".join(self.parts) or "."

    @property
    def parent(self) -> tuple[str, ...]:
        return self.parts[:-1]

    @property
    def name(self) -> str:
        if not self.parts:
            raise ModelRetry(
                f"{shown(self.path)} is the workspace root directory; name a file inside it."
            )
        return self.parts[-1]


class Workspace:
    """The directory the file tools may touch, and the only way they open anything in it."""

    def __init__(self, root: str | Path, *, allow_hardlinks: bool = False):
        real = os.path.realpath(os.path.expanduser(os.fspath(root)))
        if not os.path.isdir(real):
            raise UsageError(f"The workspace {str(root)!r} is not a directory; create it first.")
        self.root = real
        self.allow_hardlinks = allow_hardlinks

    def contains(self, real: str) -> bool:
        """Whether an absolute, resolved path is the root or below it (not a string prefix)."""
        return os.path.commonpath([self.root, real]) == self.root

    def resolve(self, path: str, *, follow_final: bool = True) -> Target:
        """Resolve ``path`` (relative to the root, or absolute) and check it stays inside.

        With ``follow_final=False`` a final symbolic link is kept as it is (to delete the
        link, not what it points to).
        """
        if "\x00" in path:
            raise ModelRetry(
                f"{shown(path)} contains a NUL byte; send a plain path relative to the workspace."
            )
        expanded = os.path.expanduser(path) if path.startswith("~") else path
        joined = os.path.join(self.root, expanded)
        head, tail = os.path.split(joined)
        try:
            if follow_final or tail in ("", ".", ".."):
                real = real_path(joined)
            else:
                real = os.path.join(real_path(head), tail)
        except OSError as exc:
            raise path_error(path, exc) from None
        if not self.contains(real):
            raise ModelRetry(
                f"{shown(path)} is outside the workspace; use a path relative to the "
                "workspace root, such as 'notes/todo.txt'."
            )
        rel = os.path.relpath(real, self.root)
        return Target(path, () if rel == "." else tuple(rel.split(os.sep)))

    @contextmanager
    def open_dir(self, parts: tuple[str, ...], path: str, *, create: bool = False) -> Iterator[int]:
        """Yield a descriptor of the directory ``parts``, walked without following links.

        ``create`` makes missing directories. Any ``OSError`` (also from the body of the
        ``with`` block) becomes a :class:`ModelRetry` naming ``path``.
        """
        try:
            fd = os.open(self.root, DIR_FLAGS)
        except OSError as exc:
            raise path_error(path, exc) from None
        try:
            for name in parts:
                sub = _step(fd, name, create)
                os.close(fd)
                fd = sub
            yield fd
        except OSError as exc:
            raise path_error(path, exc) from None
        finally:
            os.close(fd)

    def open_file(self, target: Target, flags: int, *, create_parents: bool = False) -> int:
        """Open the regular file ``target`` (``flags`` may add ``O_CREAT``); checked by fstat."""
        name = target.name
        with self.open_dir(target.parent, target.path, create=create_parents) as dfd:
            before = lstat_at(dfd, name)
            if before is not None:
                self.check_stat(before, target.path)
            elif not flags & os.O_CREAT:
                raise FileNotFoundError(errno.ENOENT, "not found")
            fd = os.open(name, flags | _FILE_FLAGS, 0o666, dir_fd=dfd)
            try:
                self.check_stat(os.fstat(fd), target.path)
            except BaseException:
                os.close(fd)
                raise
            return fd

    def check_stat(self, st: os.stat_result, path: str) -> None:
        """Refuse anything but a regular file with one name (unless hard links are allowed)."""
        p = shown(path)
        if stat.S_ISDIR(st.st_mode):
            raise ModelRetry(f"{p} is a directory; use list_dir or find_files for directories.")
        if stat.S_ISLNK(st.st_mode):
            raise ModelRetry(
                f"{p} is a symbolic link that does not resolve inside the workspace (a loop, "
                "or it changed while being opened); use the path of the real file."
            )
        if not stat.S_ISREG(st.st_mode):
            raise ModelRetry(
                f"{p} is not a regular file (a device, pipe or socket); only regular files "
                "can be used."
            )
        if st.st_nlink > 1 and not self.allow_hardlinks:
            raise ModelRetry(
                f"{p} is a hard link ({st.st_nlink} names) and may be shared with a file "
                "outside the workspace, so it cannot be used; work on a copy instead."
            )

    def kind(self, target: Target) -> str | None:
        """``"file"``, ``"dir"``, ``"link"`` or ``"other"`` for an existing target, else None."""
        try:
            with self.open_dir(target.parent, target.path) as dfd:
                st = lstat_at(dfd, target.name) if target.parts else os.fstat(dfd)
        except ModelRetry:
            return None
        return None if st is None else _kind(st.st_mode)

    def walk(
        self, dfd: int, rel: str, limits: Walk
    ) -> Generator[tuple[str, os.DirEntry[str], int], None, None]:
        """Yield ``(path, entry, dir_fd)`` below the directory ``dfd``, sorted, depth first.

        Directories are entered through ``O_NOFOLLOW`` descriptors: a symbolic link is
        yielded as an entry but never followed. ``limits`` bounds the entries listed and
        the depth; the walk keeps its own stack (no recursion) and closes what it opened.
        """
        stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = []
        try:
            stack.append((dfd, rel, iter(limits.listing(dfd))))
            while stack:
                fd, here, entries = stack[-1]
                entry = next(entries, None)
                if entry is None:
                    stack.pop()
                    if fd != dfd:
                        os.close(fd)
                    continue
                path = f"{here}/{entry.name}" if here != "." else entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir and entry.name in limits.skip_dirs:
                    limits.skipped.append(path)
                    continue
                yield path, entry, fd
                if is_dir and not limits.stopped:
                    self._enter(stack, fd, entry.name, path, limits)
        finally:
            for fd, _, _ in stack:
                if fd != dfd:
                    os.close(fd)

    @staticmethod
    def _enter(
        stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]],
        fd: int,
        name: str,
        path: str,
        limits: Walk,
    ) -> None:
        """Push the subdirectory ``name`` of ``fd``, unless it is too deep or cannot open."""
        if len(stack) > limits.max_depth:
            limits.too_deep += 1
            return
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            return
        try:
            listing = limits.listing(sub)
        except OSError:
            os.close(sub)
            return
        stack.append((sub, path, iter(listing)))


@dataclass(slots=True)
class Walk:
    """Bounds of one directory walk; ``stopped`` says the entry bound cut it short.

    At most ``max_entries`` entries are listed in all (so memory stays bounded too), and
    directories deeper than ``max_depth`` below the start are not entered (``too_deep``
    counts them). Directories named in ``skip_dirs`` below the start are neither yielded
    nor entered; ``skipped`` lists them so the caller can say so.
    """

    max_entries: int = 50_000
    max_depth: int = 64
    skip_dirs: frozenset[str] = frozenset()
    listed: int = 0
    too_deep: int = 0
    stopped: bool = False
    skipped: list[str] = field(default_factory=list)

    def listing(self, dfd: int) -> list[os.DirEntry[str]]:
        """The entries of the directory ``dfd``, sorted by name, within what is left."""
        left = self.max_entries - self.listed
        with os.scandir(dfd) as it:
            entries = list(islice(it, max(left, 0) + 1))
        if len(entries) > left:
            entries = entries[: max(left, 0)]
            self.stopped = True
        self.listed += len(entries)
        return sorted(entries, key=lambda e: e.name)

    def notes(self) -> list[str]:
        """What the bounds left out, one bracketed line each (none when nothing was)."""
        lines = []
        if self.stopped:
            lines.append(
                f"[search stopped after {self.max_entries} entries; narrow the path or pattern]"
            )
        if self.too_deep:
            lines.append(
                f"[{self.too_deep} directories deeper than {self.max_depth} levels were not "
                "entered; search from a deeper path]"
            )
        return lines


def lstat_at(dfd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in the directory ``dfd``; None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def real_path(path: str) -> str:
    """``os.path.realpath`` of an absolute ``path``, without recursion.

    Follows at most :data:`MAX_LINKS` symbolic links (then ``ELOOP``); a missing part, or
    one the system cannot look up (a name too long), is kept as written.
    """
    parts: list[str] = []
    todo = list(reversed(path.split("/")))
    links = 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if parts:
                parts.pop()
            continue
        here = "/" + "/".join([*parts, name])
        try:
            is_link = stat.S_ISLNK(os.lstat(here).st_mode)
        except OSError:
            is_link = False
        if not is_link:
            parts.append(name)
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links")
        target = os.readlink(here)
        if target.startswith("/"):
            parts = []
        todo.extend(reversed(target.split("/")))
    return "/" + "/".join(parts)


def _step(fd: int, name: str, create: bool) -> int:
    """Open the subdirectory ``name`` of ``fd``, never through a link; maybe create it."""
    if name in ("", ".", "..") or "/" in name:
        raise OSError(errno.ELOOP, "unexpected path component")
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o777, dir_fd=fd)
    except FileExistsError:
        pass
    return os.open(name, DIR_FLAGS, dir_fd=fd)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"
