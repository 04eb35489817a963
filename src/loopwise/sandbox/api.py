"""What every sandbox backend shares: limits, the result of a run, the protocol, the error."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import UsageError

__all__ = ["INSTALL_HINT", "Limits", "Sandbox", "SandboxResult", "SandboxUnavailable"]

INSTALL_HINT = "install bubblewrap: apt-get install bubblewrap (or start a Docker engine)"


class SandboxUnavailable(UsageError):
    """No OS sandbox can run here; the message says what to install."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for one run; every value must be positive.

    ``cpu_seconds``, ``memory_mb`` (address space), ``max_file_mb`` (largest file written)
    and ``max_open_files`` are kernel limits on each process; ``max_processes`` counts the
    processes the command may add; ``wall_seconds`` is enforced by the parent, which then
    kills the whole process tree; ``max_output_bytes`` caps each of stdout and stderr.
    ``max_workspace_mb`` (disk space) and ``max_workspace_files`` (files and directories)
    cap the whole workspace: a run that takes it past either is stopped, and a workspace
    already past them may only shrink.
    """

    cpu_seconds: float = 30.0
    memory_mb: int = 512
    max_processes: int = 64
    max_file_mb: int = 64
    max_open_files: int = 256
    wall_seconds: float = 60.0
    max_output_bytes: int = 64_000
    max_workspace_mb: int = 1024
    max_workspace_files: int = 20_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = int if f.type == "int" else int | float
            if isinstance(value, bool) or not isinstance(value, kind):
                expected = "an integer" if f.type == "int" else "a number"
                raise UsageError(f"Limits.{f.name} must be {expected}, got {value!r}.")
            if not math.isfinite(value) or value <= 0:
                raise UsageError(
                    f"Limits.{f.name} must be a positive number, got {value!r}; "
                    "choose a value greater than 0."
                )


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What a sandboxed command did.

    ``exit_code`` is the command's exit status, ``128 + N`` when signal ``N`` killed it
    (the shell convention, as bubblewrap and Docker report it), and ``None`` when the
    sandbox itself was killed at the wall-clock limit. ``killed_by`` says why it was
    stopped, best effort: ``"timeout"``, ``"cpu"`` (SIGXCPU), ``"file_size"`` (SIGXFSZ),
    ``"workspace_quota"`` or ``"signal:NAME"``; running out of memory usually shows as an
    allocation error in ``stderr`` instead, since the address-space limit makes
    allocations fail.
    ``files_written`` lists workspace-relative paths created or modified, sorted; past 200
    the list ends with an ``"... and N more"`` entry. ``workspace_note`` says, in a
    sentence or two, when the workspace is over its quota or too deep to measure.
    """

    exit_code: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    killed_by: str | None = None
    files_written: list[str] = field(default_factory=list)
    workspace_note: str | None = None

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data (for a tool result or a log)."""
        data = asdict(self)
        data["duration"] = round(self.duration, 3)
        return data

    def summary(self) -> str:
        """Compact text for a model: status line, files written, then stdout and stderr."""
        if self.timed_out:
            status = f"timed out after {self.duration:.1f}s (killed)"
        elif self.exit_code is None:
            status = "killed"
        else:
            status = f"exit code {self.exit_code}"
        if self.killed_by and not self.timed_out:
            status += f", killed by {self.killed_by}"
        lines = [f"{status}; duration {self.duration:.2f}s"]
        if self.files_written:
            lines.append("files written: " + ", ".join(self.files_written))
        lines.append("stdout:\n" + (self.stdout if self.stdout else "(empty)"))
        if self.stderr:
            lines.append("stderr:\n" + self.stderr)
        if self.workspace_note:
            lines.append("workspace: " + self.workspace_note)
        return "\n".join(lines)


@runtime_checkable
class Sandbox(Protocol):
    """Runs a command isolated from the host: no network by default, only the workspace
    writable, the host environment never visible, and the given limits enforced."""

    name: str

    async def run(
        self,
        argv: Sequence[str],
        *,
        workspace: Path | str,
        stdin: bytes | None = None,
        limits: Limits | None = None,
        env: Mapping[str, str] | None = None,
        network: bool = False,
    ) -> SandboxResult:
        """Run ``argv`` with ``workspace`` mounted read-write at ``/workspace`` (the cwd)."""
        ...


def check_run_args(argv: Sequence[str], env: Mapping[str, str] | None) -> dict[str, str]:
    """Validate the command and extra variables; returns the variables as a plain dict."""
    if isinstance(argv, str | bytes) or not argv:
        raise UsageError(f"argv must be a non-empty list of strings, got {argv!r}.")
    for arg in argv:
        if not isinstance(arg, str) or "\0" in arg:
            raise UsageError(f"Every argv item must be a string without NUL, got {arg!r}.")
    extra = dict(env or {})
    for key, value in extra.items():
        bad_key = not key or "=" in key or "\0" in key
        if bad_key or not isinstance(value, str) or "\0" in value:
            raise UsageError(
                f"Invalid environment variable {key!r}={value!r}: names cannot be empty or "
                "contain '=' or NUL, and values must be strings without NUL."
            )
    return extra


def resolve_workspace(workspace: Path | str) -> Path:
    """The workspace as an absolute, existing directory (symlinks resolved)."""
    path = Path(workspace).resolve()
    if not path.is_dir():
        raise UsageError(
            f"The sandbox workspace {str(workspace)!r} is not an existing directory; "
            "create it first."
        )
    return path
