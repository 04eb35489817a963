"""File tools confined to one workspace directory: read, write, append, delete, list, find, grep.

Use them as ``Agent(model, tools=files("./workspace"))``. Every path is resolved and checked
to stay inside the workspace, then opened without following symbolic links (see
:mod:`loopwise.toolkits._paths`). Overwriting and deleting wait for a human decision by
default, and so does appending to an existing file; creating a new file does not.
"""

from __future__ import annotations

import codecs
import errno
import os
import secrets
import stat
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from ..errors import ModelRetry, UsageError
from ..tools import Tool, ToolContext, tool
from ._file_search import SKIP_DIRS, find_paths, grep_text, walk_limits
from ._paths import READ_FLAGS, Target, Workspace, lstat_at, path_error, shown

__all__ = ["files"]

_SNIFF_BYTES = 8192
_CHUNK_BYTES = 1 << 16
_COUNT_CAP_BYTES = 32 << 20
"""After the page, count the characters left exactly only while this many bytes remain."""
_MAX_LIST_ENTRIES = 500
_MAX_LIST_SCAN = 10_000


def files(
    workspace: str | Path,
    *,
    approve_overwrite: bool = True,
    approve_delete: bool = True,
    read_only: bool = False,
    max_read_chars: int = 20_000,
    max_write_bytes: int = 10_000_000,
    allow_hardlinks: bool = False,
    skip_dirs: Iterable[str] = SKIP_DIRS,
) -> list[Tool]:
    """File tools for an agent, confined to the directory ``workspace``.

    Returns ``read_file``, ``list_dir``, ``find_files`` and ``grep``, plus ``write_file``,
    ``append_file`` and ``delete_file`` unless ``read_only``. Changing an existing file by
    overwriting or appending (``approve_overwrite``) and deleting (``approve_delete``) pause
    the run for approval.
    ``max_read_chars`` is the page size of ``read_file``; ``max_write_bytes`` bounds one
    write. Files with several names (hard links) are refused unless ``allow_hardlinks``:
    one may be a link to a file outside the workspace. ``find_files`` and ``grep`` do not
    enter the directories named in ``skip_dirs`` (by default ``.git``, ``node_modules``,
    ``.venv``, caches...) unless the path or pattern names them, and say what they skipped.
    """
    if max_read_chars < 1 or max_write_bytes < 1:
        raise UsageError("max_read_chars and max_write_bytes must be positive integers.")
    ws = Workspace(workspace, allow_hardlinks=allow_hardlinks)
    skip = frozenset(skip_dirs)
    reading = [
        _read_tool(ws, max_read_chars),
        _list_tool(ws),
        _find_tool(ws, skip),
        _grep_tool(ws, skip),
    ]
    if read_only:
        return reading
    writing = [
        _write_tool(ws, approve_overwrite, max_write_bytes),
        _append_tool(ws, approve_overwrite, max_write_bytes),
        _delete_tool(ws, approve_delete),
    ]
    return reading[:1] + writing + reading[1:]


# ---------------------------------------------------------------------------------------
# The tools (their docstrings are what the model reads)


def _read_tool(ws: Workspace, max_chars: int) -> Tool:
    def read_file(path: str, offset: int = 0, limit: int = max_chars) -> str:
        """Read a text file from the workspace, one page of characters at a time.

        A long file is cut after `limit` characters and ends with a line
        "[truncated: N more characters; call read_file with offset=M to continue]".
        Binary files are refused.

        Args:
            path: File path relative to the workspace root, e.g. "src/app.py".
            offset: Number of characters to skip from the start of the file.
            limit: Maximum number of characters to return (the toolkit caps it).
        """
        if offset < 0 or limit < 1:
            raise ModelRetry("offset must be 0 or more and limit 1 or more; call again.")
        fd = ws.open_file(ws.resolve(path), READ_FLAGS)
        try:
            return read_page(fd, path, offset, min(limit, max_chars))
        except OSError as exc:
            raise path_error(path, exc) from None

    return tool(max_output_chars=max_chars + 300, effects=["read"])(read_file)


def _existing_file_rule(ws: Workspace) -> Any:
    """The approval rule of a change to an existing file: True when ``path`` is one."""

    def changes_existing(args: dict[str, Any]) -> bool:
        try:
            target = ws.resolve(args["path"])
        except ModelRetry:
            return False  # refused by the tool itself: nothing to approve
        return ws.kind(target) == "file"  # anything else is refused by the tool itself

    return changes_existing


def _write_tool(ws: Workspace, approve_overwrite: bool, max_bytes: int) -> Tool:
    def write_file(ctx: ToolContext[Any], path: str, content: str) -> str:
        """Write text to a file in the workspace, creating it and missing parent directories.

        Creating a new file needs no approval; replacing an existing one may wait for a
        human decision. To add to the end of a file, use append_file instead.

        Args:
            path: File path relative to the workspace root, e.g. "notes/plan.md".
            content: The complete new content of the file (UTF-8 text).
        """
        data = _encode(content, path, max_bytes)
        target = ws.resolve(path)
        may_replace = ctx.approved or not approve_overwrite
        with ws.open_dir(target.parent, path, create=True) as dfd:
            if may_replace:
                replaced = _replace_at(ws, dfd, target, data)
            else:
                _create_at(ws, dfd, target, data, "write_file")
                replaced = False
        verb = "Replaced" if replaced else "Created"
        return f"{verb} {target.rel} ({len(data)} bytes)."

    rule = _existing_file_rule(ws) if approve_overwrite else False
    return tool(requires_approval=rule, effects=["write"])(write_file)


def _append_tool(ws: Workspace, approve_append: bool, max_bytes: int) -> Tool:
    def append_file(ctx: ToolContext[Any], path: str, content: str) -> str:
        """Append text to the end of a file in the workspace, creating it if it is missing.

        Creating a new file needs no approval; adding to an existing one may wait for a
        human decision.

        Args:
            path: File path relative to the workspace root, e.g. "logs/notes.txt".
            content: Text to add at the end; include a final newline if you want one.
        """
        data = _encode(content, path, max_bytes)
        target = ws.resolve(path)
        if approve_append and not ctx.approved:
            with ws.open_dir(target.parent, path, create=True) as dfd:
                _create_at(ws, dfd, target, data, "append_file")
            return f"Created {target.rel} ({len(data)} bytes)."
        fd = ws.open_file(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, create_parents=True)
        try:
            _write_all(fd, data)
            size = os.fstat(fd).st_size
        except OSError as exc:
            raise path_error(path, exc) from None
        finally:
            os.close(fd)
        return f"Appended {len(data)} bytes to {target.rel} (now {size} bytes)."

    rule = _existing_file_rule(ws) if approve_append else False
    return tool(requires_approval=rule, idempotent=False, effects=["write"])(append_file)


def _delete_tool(ws: Workspace, approve_delete: bool) -> Tool:
    def delete_file(ctx: ToolContext[Any], path: str) -> str:
        """Delete one file (or one empty directory) in the workspace; it cannot be undone.

        Args:
            path: Path relative to the workspace root of the file to delete.
        """
        if approve_delete and not ctx.approved:
            raise ModelRetry(f"Deleting {shown(path)} needs a human approval it did not get.")
        target = ws.resolve(path, follow_final=False)
        name = target.name
        with ws.open_dir(target.parent, path) as dfd:
            st = lstat_at(dfd, name)
            if st is None:
                raise FileNotFoundError(errno.ENOENT, "not found")
            if stat.S_ISDIR(st.st_mode):
                _remove_dir(dfd, name, path)
                return f"Deleted the empty directory {target.rel}."
            if stat.S_ISREG(st.st_mode):
                ws.check_stat(st, path)
            os.unlink(name, dir_fd=dfd)
        return f"Deleted {target.rel}."

    return tool(requires_approval=approve_delete, effects=["write", "irreversible"])(delete_file)


def _list_tool(ws: Workspace) -> Tool:
    def list_dir(path: str = ".") -> str:
        """List a directory of the workspace: each entry with its type and size, sorted.

        Directories end with "/"; symbolic links are shown as links and not followed.

        Args:
            path: Directory relative to the workspace root; "." is the root.
        """
        target = ws.resolve(path)
        with ws.open_dir(target.parts, path) as dfd, os.scandir(dfd) as it:
            found = [(e.name, _describe(e)) for e in islice(it, _MAX_LIST_SCAN + 1)]
        names = [line for _, line in sorted(found)[:_MAX_LIST_SCAN]]
        over = "over " if len(found) > _MAX_LIST_SCAN else ""
        count = f"{over}{len(names)} entr{'y' if len(names) == 1 else 'ies'}"
        lines = [f"{target.rel}/ ({count})", *names[:_MAX_LIST_ENTRIES]]
        if len(names) > _MAX_LIST_ENTRIES:
            lines.append(
                f"[{over}{len(names) - _MAX_LIST_ENTRIES} more entries not shown; "
                "use find_files with a pattern to narrow down]"
            )
        return "\n".join(lines) if names else f"{target.rel}/ is empty."

    return tool(effects=["read"])(list_dir)


def _find_tool(ws: Workspace, skip: frozenset[str]) -> Tool:
    def find_files(pattern: str, path: str = ".") -> str:
        """Find files and directories whose path matches a glob pattern.

        The pattern is matched against the path relative to `path`: "*" matches within one
        directory level, "**" any number of levels ("**/*.py" finds Python files at any
        depth), "?" one character, "[abc]" one of the characters. Results are relative to
        the workspace root; directories end with "/". Symbolic links are not followed.

        Args:
            pattern: Glob pattern such as "**/*.md" or "src/*.py".
            path: Directory to search in, relative to the workspace root.
        """
        target = ws.resolve(path)
        with ws.open_dir(target.parts, path) as dfd:
            return find_paths(ws, dfd, target.rel, pattern, walk_limits(skip, pattern))

    return tool(effects=["read"])(find_files)


def _grep_tool(ws: Workspace, skip: frozenset[str]) -> Tool:
    def grep(
        pattern: str,
        path: str = ".",
        glob: str | None = None,
        ignore_case: bool = False,
        max_matches: int = 100,
    ) -> str:
        """Search text files for a regular expression; prints "file:line: text" per match.

        Binary files, files over 5 MB and symbolic links are skipped; only the first 2000
        characters of a line are searched.

        Args:
            pattern: Regular expression, e.g. "def \\w+\\(" or "TODO|FIXME" (Python-like
                RE2 syntax, matched in linear time: no backreferences or lookaround).
            path: File or directory to search, relative to the workspace root.
            glob: Only search files whose name matches this glob, e.g. "*.py"; a glob with
                "/" is matched against the path relative to `path`.
            ignore_case: Match letters regardless of case.
            max_matches: Stop after this many matching lines (at most 1000).
        """
        target = ws.resolve(path)
        if ws.kind(target) == "file":
            return grep_text(ws, None, target, pattern, glob, ignore_case, max_matches)
        with ws.open_dir(target.parts, path) as dfd:
            return grep_text(ws, dfd, target, pattern, glob, ignore_case, max_matches, skip)

    return tool(effects=["read"])(grep)


# ---------------------------------------------------------------------------------------
# Reading and writing


def read_page(fd: int, path: str, offset: int, limit: int) -> str:
    """Characters ``offset`` to ``offset + limit`` of the open file ``fd`` (closed after).

    Decodes UTF-8 in chunks (bad bytes become U+FFFD), so memory stays bounded; a note at
    the end says how much is left and which offset reads on.
    """
    with open(fd, "rb", buffering=0) as f:
        head = f.read(_SNIFF_BYTES)
        if b"\x00" in head:
            raise ModelRetry(
                f"{shown(path)} looks like a binary file (it contains NUL bytes); "
                "only text files can be read."
            )
        size = os.fstat(fd).st_size
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        end = offset + limit
        page: list[str] = []
        pos, chunk, left_bytes = 0, head, 0
        while True:
            text = decoder.decode(chunk, final=not chunk)
            if pos < end and pos + len(text) > offset:
                page.append(text[max(offset - pos, 0) : end - pos])
            pos += len(text)
            if not chunk:
                break
            if pos >= end and size - f.tell() > _COUNT_CAP_BYTES:
                left_bytes = size - f.tell()
                break
            chunk = f.read(_CHUNK_BYTES)
    if pos == 0:
        return f"({shown(path)} is empty.)"
    if offset >= pos and not left_bytes:
        raise ModelRetry(
            f"offset {offset} is past the end of {shown(path)}, which has {pos} characters; "
            "use a smaller offset."
        )
    more = max(pos - end, 0)
    if not more and not left_bytes:
        return "".join(page)
    about = f"about {more + left_bytes}" if left_bytes else str(more)
    return (
        "".join(page)
        + f"\n[truncated: {about} more characters; call read_file with offset={end} to continue]"
    )


def _encode(content: str, path: str, max_bytes: int) -> bytes:
    data = content.encode("utf-8", errors="surrogatepass")
    if len(data) > max_bytes:
        raise ModelRetry(
            f"The content for {shown(path)} is {len(data)} bytes, over the limit of "
            f"{max_bytes}; write it in parts with write_file then append_file."
        )
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _create_at(ws: Workspace, dfd: int, target: Target, data: bytes, tool_name: str) -> None:
    """Create a new file; an existing one (even one that appeared just now) is refused."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target.name, flags, 0o666, dir_fd=dfd)
    except FileExistsError:
        existing = lstat_at(dfd, target.name)
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            ws.check_stat(existing, target.path)
        change = "replacing" if tool_name == "write_file" else "adding to"
        raise ModelRetry(
            f"{shown(target.path)} already exists and {change} it needs approval; call "
            f"{tool_name} again to ask for it."
        ) from None
    try:
        _write_all(fd, data)
    except OSError:
        os.close(fd)
        os.unlink(target.name, dir_fd=dfd)
        raise
    os.close(fd)


def _replace_at(ws: Workspace, dfd: int, target: Target, data: bytes) -> bool:
    """Write a temporary file next to the target, then rename it over; True if one existed."""
    before = lstat_at(dfd, target.name)
    if before is not None:
        ws.check_stat(before, target.path)
    temp = f".{secrets.token_hex(6)}.loopwise-tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o666, dir_fd=dfd)
    try:
        try:
            _write_all(fd, data)
            if before is not None:
                os.fchmod(fd, stat.S_IMODE(before.st_mode))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        _unlink_quietly(dfd, temp)
        raise
    return before is not None


def _unlink_quietly(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def _remove_dir(dfd: int, name: str, path: str) -> None:
    try:
        os.rmdir(name, dir_fd=dfd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise ModelRetry(
            f"{shown(path)} is a directory that is not empty; delete_file removes only "
            "files and empty directories."
        ) from None


def _describe(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return f"{entry.name}  (link)"
    if entry.is_dir(follow_symlinks=False):
        return f"{entry.name}/  (dir)"
    if not entry.is_file(follow_symlinks=False):
        return f"{entry.name}  (other)"
    try:
        size: int | str = entry.stat(follow_symlinks=False).st_size
    except OSError:
        size = "?"
    return f"{entry.name}  (file, {size} bytes)"
