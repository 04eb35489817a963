"""Read-only host facts for incident response: logs, memory, disk, load, top processes.

Log tools only open regular files inside the allowed log directories, checked after symlinks
and ``..`` are resolved. ``tail_log`` seeks from the end (a 10 GB log costs a few reads);
``grep_log`` matches in a child process with a deadline (see ``_loggrep``), newest lines
first by default, so a catastrophic pattern from the model is killed instead of hanging the
agent. The rest reads ``/proc`` (Linux) and needs no third-party package. What looks like a
secret in a process's command line or a log line is shown as ``[REDACTED]`` (see
``_redact``): other users' command lines are readable, keys on them are not for the model.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelRetry, UsageError
from ..tools import Tool, tool
from ._loggrep import grep_file, human_size
from ._redact import redact_argv, redact_text
from ._regex import compile_pattern, re2_home

__all__ = ["system"]

MAX_TAIL_LINES = 2_000
MAX_MATCHES = 1_000
MAX_LINE_CHARS = 2_000
_TAIL_MAX_BYTES = 8 * 1024 * 1024
_LIST_MAX_FILES = 500
_CPU_SAMPLE_S = 0.2
_MB = 1024 * 1024
_MAX_TEXT = 50_000
_WALK_MAX_ENTRIES = 50_000
_WALK_MAX_DEPTH = 32
_CMDLINE_READ = 16_384
"""Bytes of a command line read: far more than the 200 shown, so redaction sees the rest."""


def system(
    *, log_dirs: Sequence[str | Path] = (), grep_timeout: float = 10.0, redact: bool = True
) -> list[Tool]:
    """Read-only system tools; log tools too when ``log_dirs`` names directories to allow.

    ``grep_timeout`` (seconds) bounds one ``grep_log`` scan. Log lines the tools show have
    what looks like a secret replaced by ``[REDACTED]`` unless ``redact`` is False (process
    command lines always do). Raises ``UsageError`` when a log directory does not exist.
    """
    dirs = [Path(d).resolve() for d in log_dirs]
    for given, d in zip(log_dirs, dirs, strict=True):
        if not d.is_dir():
            raise UsageError(f"Log directory {str(given)!r} does not exist or is not a directory.")
    local = tool(trusted=True, effects=["read"])  # the machine's own figures
    tools = [local(memory), local(disk_usage), local(load), tool(effects=["read"])(processes)]
    if dirs:
        tools = [*_log_tools(dirs, grep_timeout, redact), *tools]
    return tools


def _log_tools(dirs: list[Path], grep_timeout: float, redact: bool) -> list[Tool]:
    allowed = ", ".join(str(d) for d in dirs)

    def shown(text: str) -> str:
        return redact_text(text) if redact else text

    def open_log(path: str) -> tuple[Path, int]:
        real = _resolve_log(path, dirs, allowed)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise ModelRetry(f"Cannot open log {path!r}: {exc.strerror}.") from None
        return real, fd

    def list_logs(pattern: str = "*") -> str:
        """List the log files you may read (path, size, last modified).

        Args:
            pattern: Only names matching this glob, e.g. "*.log" or "nginx/*".
        """
        return _list_logs(dirs, pattern) or f"(no log files match {pattern!r} in {allowed})"

    def tail_log(path: str, lines: int = 100) -> str:
        """Show the last lines of a log file.

        Args:
            path: The log file: absolute, or relative to a log directory (see list_logs).
            lines: How many lines from the end (1 to 2000).
        """
        count = min(max(lines, 1), MAX_TAIL_LINES)
        real, fd = open_log(path)
        try:
            size = os.fstat(fd).st_size
            text = _tail(fd, size, count)
        finally:
            os.close(fd)
        return f"{real} ({human_size(size)}), last {count} lines:\n{shown(text)}"

    def grep_log(
        path: str,
        pattern: str,
        max_matches: int = 100,
        ignore_case: bool = False,
        newest: bool = True,
    ) -> str:
        """Find the lines of a log file that match a regular expression.

        By default the newest matches: the file is searched from its end, and the last
        max_matches matching lines are shown in file order with their line numbers. Only the
        first 2000 characters of each line are searched; a search that runs too long is
        stopped and returns what it found so far.

        Args:
            path: The log file: absolute, or relative to a log directory (see list_logs).
            pattern: A regular expression (Python-like RE2 syntax: no backreferences or
                lookaround), searched in each line.
            max_matches: Stop after this many matching lines (1 to 1000).
            ignore_case: Match letters regardless of case.
            newest: Search from the end (the most recent lines); false: from the start.
        """
        flags = re.IGNORECASE if ignore_case else 0
        home = re2_home()
        if home:
            compile_pattern(pattern, ignore_case=ignore_case)  # refuses what RE2 cannot match
        else:  # matched by Python's re in the child, which is killed at the deadline
            _python_regex(pattern, flags)
        limit = min(max(max_matches, 1), MAX_MATCHES)
        real, fd = open_log(path)
        try:
            found = grep_file(
                real, fd, pattern, int(flags), limit=limit, width=MAX_LINE_CHARS,
                newest=newest, timeout=grep_timeout, max_chars=_MAX_TEXT, re2_home=home,
            )  # fmt: skip
        finally:
            os.close(fd)
        head, newline, lines = found.partition("\n")  # the head shows the pattern as given
        return head + newline + shown(lines)

    return [
        tool(trusted=True, effects=["read"])(list_logs),
        tool(max_output_chars=_MAX_TEXT + 1_000, effects=["read"])(tail_log),
        tool(max_output_chars=_MAX_TEXT + 1_000, timeout=grep_timeout + 10.0, effects=["read"])(
            grep_log
        ),
    ]


def _python_regex(pattern: str, flags: int) -> None:
    try:
        re.compile(pattern, flags)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ModelRetry(f"Invalid regular expression {pattern!r}: {exc}.") from None


def _resolve_log(path: str, dirs: list[Path], allowed: str) -> Path:
    """The real path of a log file inside an allowed directory, or a ModelRetry."""
    if not path or "\0" in path:
        raise ModelRetry(f"Invalid log path {path!r}.")
    given = Path(path)
    candidates = [given] if given.is_absolute() else [d / given for d in dirs]
    outside = False
    for candidate in candidates:
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if not any(real.is_relative_to(d) for d in dirs):
            outside = True
        elif real.is_file():
            return real
    if outside or (given.is_absolute() and not any(given.is_relative_to(d) for d in dirs)):
        raise ModelRetry(
            f"Log path {path!r} is outside the allowed log directories ({allowed}); "
            "use list_logs to see the files you may read."
        )
    raise ModelRetry(f"No log file {path!r} in {allowed}; use list_logs to see the files.")


def _list_logs(dirs: list[Path], pattern: str) -> str:
    rows: list[str] = []
    budget = _Budget()
    for root in dirs:
        for full in _log_files(root, budget):
            rel = full.relative_to(root).as_posix()
            if not (fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(full.name, pattern)):
                continue
            try:
                real = full.resolve(strict=True)
                st = real.stat()
            except (OSError, RuntimeError):
                continue
            if not real.is_relative_to(root) or not real.is_file():
                continue
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
            rows.append(f"{full}\t{human_size(st.st_size)}\t{when}")
            if len(rows) >= _LIST_MAX_FILES:
                return "\n".join([*rows, f"... (stopped at {_LIST_MAX_FILES} files)"])
    if budget.stopped:
        rows.append(
            f"... (stopped after listing {_WALK_MAX_ENTRIES} entries or below "
            f"{_WALK_MAX_DEPTH} levels; use a narrower pattern)"
        )
    return "\n".join(rows)


class _Budget:
    """Entries left to list across one ``list_logs`` call, and whether a bound was hit."""

    def __init__(self) -> None:
        self.left = _WALK_MAX_ENTRIES
        self.stopped = False


def _log_files(root: Path, budget: _Budget) -> Iterator[Path]:
    """Files below ``root`` (links included, never followed), sorted per directory,
    without recursion: at most ``_WALK_MAX_DEPTH`` levels and the entries ``budget`` has."""
    stack = [(root, 0)]
    while stack:
        here, depth = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(islice(it, budget.left + 1), key=lambda e: e.name)
        except OSError:
            continue
        if len(entries) > budget.left:
            entries, budget.stopped = entries[: budget.left], True
        budget.left -= len(entries)
        subdirs = []
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)
            elif depth < _WALK_MAX_DEPTH:
                subdirs.append((Path(entry.path), depth + 1))
            else:
                budget.stopped = True
        stack.extend(reversed(subdirs))


def _tail(fd: int, size: int, count: int) -> str:
    """The last ``count`` lines, reading backwards in blocks (at most 8 MB)."""
    block = 65_536
    chunks: list[bytes] = []
    newlines = 0
    pos = size
    while pos > 0 and newlines <= count and size - pos < _TAIL_MAX_BYTES:
        step = min(block, pos)
        pos -= step
        chunk = os.pread(fd, step, pos)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.decode("utf-8", "replace").splitlines()
    if pos > 0:
        lines = lines[1:]  # the first one is likely cut
    kept: list[str] = []
    used = 0
    for line in reversed(lines[-count:]):
        used += len(line := _cut(line)) + 1
        if used > _MAX_TEXT:
            kept.append(f"[earlier lines omitted: output is limited to {_MAX_TEXT} characters]")
            break
        kept.append(line)
    return "\n".join(reversed(kept))


def _cut(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    return f"{line[:MAX_LINE_CHARS]} ... [{len(line) - MAX_LINE_CHARS} more characters]"


# ---------------------------------------------------------------------------------------
# Host metrics (module-level tools: they need no configuration)


def memory() -> dict[str, Any]:
    """Memory and swap: totals in MB, what is available, and percent used."""
    info = _meminfo()
    total, available = info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    swap_total, swap_free = info.get("SwapTotal", 0), info.get("SwapFree", 0)
    return {
        "total_mb": round(total / 1024),
        "available_mb": round(available / 1024),
        "used_mb": round((total - available) / 1024),
        "used_percent": _pct(total - available, total),
        "swap_total_mb": round(swap_total / 1024),
        "swap_used_mb": round((swap_total - swap_free) / 1024),
        "swap_used_percent": _pct(swap_total - swap_free, swap_total),
    }


def disk_usage(path: str = "/") -> dict[str, Any]:
    """Disk space of the filesystem holding a path: totals in GB and percent used.

    Args:
        path: Any path on the filesystem to check, e.g. "/" or "/var/log".
    """
    try:
        usage = shutil.disk_usage(path)
    except (OSError, ValueError) as exc:
        raise ModelRetry(f"Cannot check disk usage of {path!r}: {exc}.") from None
    gb = 1024**3
    return {
        "path": path,
        "total_gb": round(usage.total / gb, 2),
        "used_gb": round(usage.used / gb, 2),
        "free_gb": round(usage.free / gb, 2),
        # As df shows it: of the space usable without root's reserve.
        "used_percent": _pct(usage.used, usage.used + usage.free),
    }


def load() -> dict[str, Any]:
    """CPU load averages (1, 5, 15 min), CPU count, load per CPU and uptime."""
    one, five, fifteen = os.getloadavg()
    cpus = os.cpu_count() or 1
    uptime = _uptime()
    days, rest = divmod(int(uptime), 86_400)
    return {
        "load_1m": round(one, 2),
        "load_5m": round(five, 2),
        "load_15m": round(fifteen, 2),
        "cpu_count": cpus,
        "load_per_cpu_1m": round(one / cpus, 2),
        "uptime_s": round(uptime),
        "uptime": f"{days} days, {time.strftime('%H:%M:%S', time.gmtime(rest))}",
    }


def processes(limit: int = 20, sort: Literal["cpu", "memory"] = "cpu") -> dict[str, Any]:
    """The top processes by recent CPU use or by resident memory.

    Args:
        limit: How many processes to show (1 to 100).
        sort: "cpu" (CPU percent over a short sample, then total CPU time) or "memory" (RSS).
    """
    first = _snapshot()
    time.sleep(_CPU_SAMPLE_S)
    now = _snapshot()
    hz = os.sysconf("SC_CLK_TCK")
    rows = []
    for pid, (ticks, rss_pages, state, comm) in now.items():
        recent = ticks - first.get(pid, (ticks,))[0]
        rows.append((pid, 100 * recent / hz / _CPU_SAMPLE_S, ticks / hz, rss_pages, state, comm))
    key = (lambda r: (r[1], r[2])) if sort == "cpu" else (lambda r: (r[3], r[1]))
    rows.sort(key=key, reverse=True)
    page = os.sysconf("SC_PAGE_SIZE")
    top = [
        {
            "pid": pid,
            "user": _owner(pid),
            "state": state,
            "cpu_percent": round(cpu, 1),
            "cpu_time_s": round(cpu_time, 1),
            "rss_mb": round(rss * page / _MB, 1),
            "command": _cmdline(pid) or f"[{redact_text(comm, entropy=True)}]",
        }
        for pid, cpu, cpu_time, rss, state, comm in rows[: min(max(limit, 1), 100)]
    ]
    return {"total_processes": len(rows), "sorted_by": sort, "processes": top}


def _snapshot() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (utime + stime ticks, rss pages, state, comm); vanished processes are skipped."""
    found: dict[int, tuple[int, int, str, str]] = {}
    for entry in _proc().iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            fields = raw[raw.rfind(")") + 2 :].split()
            ticks, rss = int(fields[11]) + int(fields[12]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        found[int(entry.name)] = (ticks, rss, fields[0], raw[raw.find("(") + 1 : raw.rfind(")")])
    return found


def _cmdline(pid: int) -> str:
    """The command line of ``pid``, what looks like a secret redacted, cut to 200 characters."""
    try:
        with (_proc() / str(pid) / "cmdline").open("rb") as f:
            raw = f.read(_CMDLINE_READ)
    except OSError:
        return ""
    argv = raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")
    text = redact_argv(argv) if raw.strip(b"\0") else ""
    return text if len(text) <= 200 else text[:200] + "..."


def _owner(pid: int) -> str:
    try:
        uid = (_proc() / str(pid)).stat().st_uid
    except OSError:
        return "?"
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _pct(part: float, whole: float) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def _meminfo() -> dict[str, int]:
    """/proc/meminfo values in kB."""
    info: dict[str, int] = {}
    for line in (_proc() / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            info[name] = int(parts[0])
    return info


def _uptime() -> float:
    return float((_proc() / "uptime").read_text().split()[0])


def _proc() -> Path:
    proc = Path("/proc")
    if not (proc / "meminfo").exists():
        raise RuntimeError("This tool needs Linux /proc, which this system does not have.")
    return proc
