"""Let the model run pre-approved scripts, and nothing else.

>>> from loopwise.toolkits.scripts import scripts
>>> tools = scripts({"disk_report": ["df", "-h"]})
>>> [t.name for t in tools]
['run_script']

The allowed set is fixed when the toolkit is built: every executable regular file directly in
a directory (symlinks that leave it are skipped), or an explicit mapping of names to a script
path or an argv prefix. Scripts run without a shell (arguments are passed literally, one argv
entry each), with a minimal environment, under a deadline that kills their whole process
group, and with their output capped.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelRetry, UsageError
from ..tools import Effect, Tool, tool
from ._process import ProcessResult, minimal_env, run_process

__all__ = ["scripts"]

_SUMMARY_BYTES = 4096
_SUMMARY_CHARS = 120


@dataclass(frozen=True, slots=True)
class _Script:
    name: str
    argv: tuple[str, ...]
    """The resolved executable (absolute) followed by any fixed arguments."""
    summary: str
    root: Path | None = None
    """For scripts found in a directory: it, so each call checks the file is still inside."""


def scripts(
    source: str | Path | Mapping[str, str | Path | Sequence[str]],
    *,
    timeout: float = 30.0,
    max_output_chars: int = 20_000,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    effects: Sequence[Effect] = ("external",),
) -> list[Tool]:
    """A ``run_script`` tool that runs only the scripts named in ``source``.

    ``source`` is a directory (its executable files, by file name) or a mapping from a name
    to a script path or an argv prefix such as ``["python", "-m", "tool", "--safe"]``.
    ``timeout`` (seconds) kills the script and its children; ``max_output_chars`` caps each of
    stdout and stderr; ``env`` is added to a minimal environment (PATH, HOME, LANG), so host
    secrets never reach the scripts; ``cwd`` is where they run (default: this process's).
    ``effects`` is what the scripts may do, for policies (any effect on the host, by default);
    their output is untrusted.
    """
    table = (
        _from_directory(Path(source)) if isinstance(source, str | Path) else _from_mapping(source)
    )
    if not table:
        raise UsageError(
            f"No runnable scripts found in {source!r}: add executable files or entries."
        )
    if cwd is not None and not Path(cwd).is_dir():
        raise UsageError(f"The scripts' working directory {str(cwd)!r} is not a directory.")
    child_env = minimal_env(env)
    allowed = ", ".join(sorted(table))

    def run_script(name: str, args: Sequence[str] = ()) -> str:
        """Run a pre-approved script and return its exit code, output and duration.

        Args:
            name: The script's name, exactly as listed.
            args: Arguments, one per list item, passed literally (no shell: quotes, `$`, `;`
                and globs are not interpreted).
        """
        script = table.get(name)
        if script is None:
            raise ModelRetry(f"Unknown script {name!r}. Allowed scripts: {allowed}.")
        _check_still_inside(script)
        try:
            result = run_process(
                [*script.argv, *args],
                env=child_env,
                timeout=timeout,
                max_output_chars=max_output_chars,
                cwd=cwd,
            )
        except ValueError as exc:
            raise ModelRetry(f"Invalid argument for script {name!r}: {exc}.") from None
        return _render(name, result, timeout)

    make = tool(
        effects=effects,
        trusted=False,
        description=_describe(table),
        max_output_chars=2 * max_output_chars + 1_000,
        timeout=timeout + 10.0,
        idempotent=False,
    )
    return [make(run_script)]


def _describe(table: Mapping[str, _Script]) -> str:
    lines = [
        "Run one of the pre-approved scripts below by name, with optional arguments. "
        "Nothing else can be run. Allowed scripts:"
    ]
    for name in sorted(table):
        summary = table[name].summary
        lines.append(f"- {name}: {summary}" if summary else f"- {name}")
    return "\n".join(lines)


def _render(name: str, result: ProcessResult, timeout: float) -> str:
    if result.timed_out:
        status = f"killed after the {timeout:g} s time limit (with its child processes)"
    else:
        status = f"exit code {result.exit_code}"
    parts = [f"script {name}: {status}, duration {result.duration:.2f} s"]
    for label, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        text = text.removesuffix("\n")
        parts.append(f"--- {label} ---\n{text}" if text else f"--- {label}: empty")
    return "\n".join(parts)


def _from_directory(directory: Path) -> dict[str, _Script]:
    if not directory.is_dir():
        raise UsageError(f"The scripts directory {str(directory)!r} does not exist.")
    root = directory.resolve()
    table: dict[str, _Script] = {}
    for entry in sorted(directory.iterdir()):
        target = entry.resolve()
        if target.parent != root or not _is_executable_file(target):
            continue  # not executable, a directory, or a symlink that leaves the directory
        table[entry.name] = _Script(entry.name, (str(target),), _summary(target), root)
    return table


def _from_mapping(mapping: Mapping[str, str | Path | Sequence[str]]) -> dict[str, _Script]:
    table: dict[str, _Script] = {}
    for name, spec in mapping.items():
        if not name or any(c.isspace() for c in name):
            raise UsageError(f"Script name {name!r} must be a non-empty word without spaces.")
        if isinstance(spec, str | Path):
            path = Path(spec).resolve()
            if not _is_executable_file(path):
                raise UsageError(f"Script {name!r}: {str(spec)!r} is not an executable file.")
            table[name] = _Script(name, (str(path),), _summary(path))
            continue
        argv = list(spec)
        if not argv:
            raise UsageError(f"Script {name!r} has an empty argv prefix.")
        found = shutil.which(argv[0], path=minimal_env()["PATH"])
        if found is None:
            raise UsageError(f"Script {name!r}: program {argv[0]!r} was not found on PATH.")
        table[name] = _Script(name, (found, *argv[1:]), " ".join(argv))
    return table


def _check_still_inside(script: _Script) -> None:
    """A file swapped for a symlink (or removed) after the toolkit was built is refused."""
    if script.root is None:
        return
    target = Path(script.argv[0])
    entry = script.root / script.name
    if entry.resolve() != target or not _is_executable_file(target):
        raise ModelRetry(f"Script {script.name!r} is no longer available.")


def _is_executable_file(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and os.access(path, os.X_OK)


def _summary(path: Path) -> str:
    """The first comment or docstring line after the shebang, if cheap to find."""
    try:
        with path.open("rb") as f:
            head = f.read(_SUMMARY_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
    for raw in head.splitlines():
        line = raw.strip()
        if not line or line.startswith("#!") or line.startswith("# -*-"):
            continue
        for mark in ("#", '"""', "'''", "//", "--"):
            if line.startswith(mark):
                text = line.removeprefix(mark).strip().rstrip("\"'").strip()
                if text:
                    return text[:_SUMMARY_CHARS]
                break
        else:
            return ""
    return ""
