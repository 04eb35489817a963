"""``grep_log``'s scan: a child process that matches lines of one log file, with a deadline.

The regular expression comes from the model: it is matched by RE2 in linear time (Python's
``re`` only where google-re2 is missing), in a child (``python -I -S``) that the parent
kills at the deadline; whatever the child printed before is kept. Two
directions: oldest first (from the start of the file), or newest first: the file is read
backwards in blocks, so the most recent matches of a 10 GB log cost a few reads, and the
matches are printed as found (as ``-k:line``, k counted back from the end). The child then
counts the lines before where it stopped, so the parent can number them from the start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._process import ProcessResult, minimal_env, run_process
from ._regex import translate

__all__ = ["grep_file", "human_size"]

_CHILD = r"""
import os, sys
if sys.argv[6]:
    sys.path.insert(0, sys.argv[6])
    import re2
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not int(sys.argv[2]) & 2
    options.max_mem = 4 << 20
    rx = re2.compile(sys.argv[1], options)
else:
    import re
    rx = re.compile(sys.argv[1], int(sys.argv[2]))
limit, width, newest = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
out, BLOCK = sys.stdout, 1 << 16

def forward():
    src = sys.stdin.buffer
    n = found = scanned = 0
    while found < limit:
        raw = src.readline(width * 4)
        if not raw:
            break
        n += 1
        scanned += len(raw)
        rest = raw
        while rest and rest[-1:] != b"\n":  # skip the rest of an over-long line
            rest = src.readline(1 << 16)
            scanned += len(rest)
        line = raw.decode("utf-8", "replace").rstrip("\r\n")[:width]
        if rx.search(line):
            found += 1
            out.write("%d:%s\n" % (n, line))
            out.flush()
    out.write("#%d %d %d\n" % (found, n, scanned))

def read_at(pos, size):
    os.lseek(0, pos, 0)
    data = b""
    while len(data) < size:
        part = os.read(0, size - len(data))
        if not part:
            break
        data += part
    return data

def backward():
    size = os.fstat(0).st_size
    pos, rest, k, found, newlines = size, b"", 0, 0, 0
    ends_open = size > 0 and read_at(size - 1, 1) != b"\n"
    first = True
    while found < limit and (pos > 0 or rest is not None):
        if pos > 0:
            step = min(BLOCK, pos)
            pos -= step
            chunk = read_at(pos, step)
            newlines += chunk.count(b"\n")
            parts = (chunk + rest).split(b"\n")
            rest = parts[0][: width * 4]  # only a line's head is searched
            lines = parts[1:]
        else:
            lines, rest = [rest], None
        for raw in reversed(lines):
            if first:
                first = False
                if not ends_open:
                    continue  # the empty "line" after the final newline
            k += 1
            line = raw.decode("utf-8", "replace").rstrip("\r")[:width]
            if rx.search(line):
                found += 1
                out.write("-%d:%s\n" % (k, line))
                out.flush()
                if found >= limit:
                    break
    scanned = size - pos
    while pos > 0:  # count the lines before the stop, to number the matches
        step = min(1 << 20, pos)
        pos -= step
        newlines += read_at(pos, step).count(b"\n")
    out.write("#%d %d %d %d\n" % (found, k, scanned, newlines + (1 if ends_open else 0)))

backward() if newest else forward()
"""


def grep_file(
    path: Path, fd: int, pattern: str, flags: int, *, limit: int, width: int, newest: bool,
    timeout: float, max_chars: int, re2_home: str | None,
) -> str:  # fmt: skip
    """Matching lines of the open log ``fd`` (``path`` names it), oldest or newest first,
    shown in file order with their line numbers, under a one-line summary. ``pattern`` is
    RE2 syntax when ``re2_home`` (where ``re2`` imports from) is given, else Python's."""
    source = translate(pattern) if re2_home else pattern
    argv = [sys.executable, "-I", "-S", "-c", _CHILD, source, str(flags), str(limit)]
    result = run_process(
        [*argv, str(width), "1" if newest else "0", re2_home or ""],
        env=minimal_env(),
        timeout=timeout,
        max_output_chars=max_chars,
        stdin=fd,
    )
    return _report(path, pattern, result, timeout, newest)


def _report(path: Path, pattern: str, result: ProcessResult, limit_s: float, newest: bool) -> str:
    lines = result.stdout.splitlines()
    summary = lines.pop().split() if lines and lines[-1].startswith("#") else []
    if summary and newest:
        found, read, scanned, total = map(int, [summary[0][1:], *summary[1:]])
        lines = [_numbered(line, total) for line in reversed(lines)]
        head = (
            f"{found} matching lines in the last {read} lines ({human_size(scanned)} read), "
            f"newest last; the file has {total} lines"
        )
    elif summary:
        found, read, scanned = map(int, [summary[0][1:], *summary[1:]])
        head = f"{found} matching lines in {read} lines ({human_size(scanned)} scanned)"
    elif result.timed_out:
        head = f"stopped at the {limit_s:g} s time limit (narrow the pattern); partial results"
        if newest:
            lines = list(reversed(lines))
            head += ", numbered back from the end (-1 is the last line)"
    else:
        head = f"the search failed: {result.stderr.strip()[-500:]}"
    return "\n".join([f"{path}: {pattern!r}: {head}", *lines])


def _numbered(line: str, total: int) -> str:
    back, _, text = line.partition(":")
    return f"{total + 1 + int(back)}:{text}"


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
