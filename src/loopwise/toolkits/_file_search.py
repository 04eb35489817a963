"""Searching the workspace for ``find_files`` and ``grep``: glob patterns and a bounded grep.

Walks never follow symbolic links (see :meth:`Workspace.walk`). ``grep`` is bounded in
matches, file size, bytes scanned, line length and time. Its patterns and the globs are
matched by RE2 in linear time (see :mod:`._regex`): no pattern can backtrack for hours.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field

from ..errors import ModelRetry
from ._paths import READ_FLAGS, Target, Walk, Workspace, shown
from ._regex import Regex, compile_glob, compile_pattern

__all__ = ["SKIP_DIRS", "find_paths", "glob_regex", "grep_text", "walk_limits"]

SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".nox",
     ".mypy_cache", ".ruff_cache", ".pytest_cache"}
)  # fmt: skip
"""Directories a recursive search does not enter unless the pattern names them: version
control data, installed dependencies and caches (not the project's own files)."""

MAX_FIND_RESULTS = 500
MAX_GREP_MATCHES = 1_000
MAX_FILE_BYTES = 5_000_000
MAX_TOTAL_BYTES = 50_000_000
MAX_LINE_CHARS = 2_000
"""Only the first characters of a line are searched: bounds the work per line."""
SHOW_LINE_CHARS = 300
MAX_SECONDS = 10.0


def glob_regex(pattern: str) -> Regex:
    """A regex for a glob: ``*`` and ``?`` stay within one level, ``**`` spans levels."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        c = pattern[i]
        end = pattern.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif end != -1:
            out.append(_char_class(pattern[i + 1 : end]))
            i = end
        else:
            out.append(c if c.isalnum() or c == "_" else f"\\x{{{ord(c):x}}}")
        i += 1
    return compile_glob("".join(out), pattern)


def _char_class(body: str) -> str:
    negate = body.startswith("!")
    body = body[1:] if negate else body
    body = body.replace("\\", "\\\\").replace("[", "\\[")
    if body.startswith("^"):
        body = "\\" + body
    return f"[{'^' if negate else ''}{body}]"


def _check_glob(pattern: str) -> str:
    pattern = pattern.removeprefix("./")
    if not pattern or pattern.startswith(("/", "~")) or ".." in pattern.split("/"):
        raise ModelRetry(
            f"The glob {shown(pattern)} must be a non-empty pattern relative to the search "
            "directory, such as '**/*.py'; choose the directory with the path argument."
        )
    return pattern


def walk_limits(skip_dirs: frozenset[str], *patterns: str | None) -> Walk:
    """Walk bounds that skip ``skip_dirs``, except those a pattern names (``.git/**``)."""
    named = {part for p in patterns if p for part in re.split(r"[/\\]", p)}
    return Walk(skip_dirs=skip_dirs - named)


def _skipped_note(limits: Walk) -> list[str]:
    if not limits.skipped:
        return []
    names = ", ".join(limits.skipped[:5]) + (", ..." if len(limits.skipped) > 5 else "")
    return [
        f"[not searched: {len(limits.skipped)} dependency, cache or version-control "
        f"directories ({names}); name one in path to search it]"
    ]


def _below(path: str, rel: str) -> str:
    return path if rel == "." else path[len(rel) + 1 :]


def find_paths(ws: Workspace, dfd: int, rel: str, pattern: str, limits: Walk) -> str:
    """Paths below the directory ``dfd`` (``rel`` in the workspace) matching ``pattern``."""
    regex = glob_regex(_check_glob(pattern))
    results: list[str] = []
    more = 0
    with closing(ws.walk(dfd, rel, limits)) as entries:
        for path, entry, _ in entries:
            if not regex.fullmatch(_below(path, rel)):
                continue
            if len(results) >= MAX_FIND_RESULTS:
                more += 1
            else:
                results.append(path + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    if not results:
        lines = [f"No paths match {shown(pattern)} under {rel}/."]
    else:
        lines = results
    if more:
        lines.append(f"[{more} more matches not shown; use a narrower pattern or path]")
    return "\n".join(lines + limits.notes() + _skipped_note(limits))


def grep_text(
    ws: Workspace,
    dfd: int | None,
    target: Target,
    pattern: str,
    glob: str | None,
    ignore_case: bool,
    max_matches: int,
    skip_dirs: frozenset[str] = SKIP_DIRS,
) -> str:
    """Lines matching ``pattern`` in the file ``target`` (``dfd`` None) or below ``dfd``."""
    regex = compile_pattern(pattern, ignore_case=ignore_case)
    scan = _Grep(regex, min(max(max_matches, 1), MAX_GREP_MATCHES))
    limits = walk_limits(skip_dirs, glob)
    if dfd is None:
        fd = ws.open_file(target, READ_FLAGS)
        scan.search(fd, target.rel, strict=True)
        return scan.report(pattern, target.rel, limits)
    name_re = glob_regex(_check_glob(glob)) if glob else None
    by_path = glob is not None and "/" in glob
    with closing(ws.walk(dfd, target.rel, limits)) as entries:
        for path, entry, parent in entries:
            if scan.stop:
                break
            if not entry.is_file(follow_symlinks=False):
                continue
            if name_re and not name_re.fullmatch(
                _below(path, target.rel) if by_path else entry.name
            ):
                continue
            scan.search_entry(ws, parent, entry.name, path)
    return scan.report(pattern, target.rel, limits)


@dataclass(slots=True)
class _Grep:
    """One grep's state: the matches so far, what was skipped, and why it stopped."""

    regex: Regex
    max_matches: int
    lines: list[str] = field(default_factory=list)
    searched: int = 0
    scanned_bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    stop: str = ""
    deadline: float = field(default_factory=lambda: time.monotonic() + MAX_SECONDS)

    def search_entry(self, ws: Workspace, dfd: int, name: str, path: str) -> None:
        if time.monotonic() > self.deadline:
            self.stop = f"stopped after {MAX_SECONDS:g} s; narrow the path or the glob"
            return
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=dfd)
            st = os.fstat(fd)
        except OSError:
            self.skipped["unreadable"] += 1
            return
        if not stat.S_ISREG(st.st_mode) or (st.st_nlink > 1 and not ws.allow_hardlinks):
            os.close(fd)
            self.skipped["special or hard-linked"] += 1
            return
        self.search(fd, path, strict=False)

    def search(self, fd: int, path: str, *, strict: bool) -> None:
        """Search the open file ``fd`` (closed after); ``strict`` refuses instead of skipping."""
        with open(fd, "rb", buffering=0) as f:
            size = os.fstat(fd).st_size
            if size > MAX_FILE_BYTES:
                self._skip("too large", path, strict)
                return
            if self.scanned_bytes + size > MAX_TOTAL_BYTES:
                self.stop = f"stopped after scanning {self.scanned_bytes} bytes; narrow the path"
                return
            data = f.read(MAX_FILE_BYTES + 1)
        if b"\x00" in data[:8192]:
            self._skip("binary", path, strict)
            return
        self.searched += 1
        self.scanned_bytes += len(data)
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if self.regex.search(line[:MAX_LINE_CHARS]):
                shown_line = line if len(line) <= SHOW_LINE_CHARS else line[:SHOW_LINE_CHARS]
                self.lines.append(f"{path}:{number}: {shown_line}")
                if len(self.lines) >= self.max_matches:
                    self.stop = f"stopped after {self.max_matches} matches; narrow the search"
                    return
            if number % 32 == 0 and time.monotonic() > self.deadline:
                self.stop = f"stopped after {MAX_SECONDS:g} s; narrow the path or the glob"
                return

    def _skip(self, why: str, path: str, strict: bool) -> None:
        if strict:
            raise ModelRetry(f"{shown(path)} is {why} for grep; search text files under 5 MB.")
        self.skipped[why] += 1

    def report(self, pattern: str, rel: str, limits: Walk) -> str:
        lines = list(self.lines) or [
            f"No matches for {shown(pattern)} in {rel} ({self.searched} files searched)."
        ]
        if self.stop:
            lines.append(f"[{self.stop}]")
        else:
            lines.extend(limits.notes())
        if self.skipped:
            parts = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
            lines.append(f"[skipped files: {parts}]")
        return "\n".join(lines + _skipped_note(limits))
