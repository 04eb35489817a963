"""The Docker backend: one throwaway container per run, for hosts without bubblewrap.

``docker run --rm`` with no network, a read-only root, a tmpfs ``/tmp``, an unprivileged
user, every capability dropped, ``no-new-privileges``, memory / process / ulimit caps, and
the workspace mounted at ``/workspace``. At the wall-clock limit (or on cancellation) the
container is killed by its generated name. The engine must see the workspace path (a
local engine); when the host runs as root the workspace is chowned to ``user`` first, as
for bubblewrap.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from ..errors import UsageError
from .api import (
    INSTALL_HINT,
    Limits,
    SandboxResult,
    SandboxUnavailable,
    check_run_args,
    resolve_workspace,
)
from .process import Outcome, kill_group, run_process
from .supervise import supervise

__all__ = ["DockerSandbox"]

_CLIENT_ENV = ("PATH", "HOME", "XDG_RUNTIME_DIR")  # plus DOCKER_*: what the client needs


class DockerSandbox:
    """Runs commands in a fresh ``image`` container; ``user`` is ``"uid:gid"``."""

    name = "docker"

    def __init__(
        self,
        image: str = "python:3.11-slim",
        *,
        docker: str | None = None,
        user: str = "65534:65534",
        cpus: float = 1.0,
    ) -> None:
        if not image or image.startswith("-"):
            raise UsageError(f"Invalid Docker image name {image!r}.")
        self.image = image
        self.docker = docker or shutil.which("docker") or "docker"
        self.user = user
        self.cpus = cpus

    def check(self) -> None:
        """Raise :class:`SandboxUnavailable` unless a Docker engine answers (cached)."""
        problem = _engine_problem(self.docker)
        if problem:
            raise SandboxUnavailable(f"Docker cannot run here ({problem}); {INSTALL_HINT}.")

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
        """Run ``argv`` in a new container with ``workspace`` at ``/workspace``."""
        limits = limits or Limits()
        extra = check_run_args(argv, env)
        root = resolve_workspace(workspace)
        await asyncio.to_thread(self.check)
        owner = _numeric_owner(self.user) if os.geteuid() == 0 else None

        async def launch(stop: asyncio.Event) -> Outcome:
            name = f"loopwise-{uuid.uuid4().hex[:16]}"
            command = self.command(
                argv, workspace=root, limits=limits, env=extra, network=network, name=name
            )
            return await run_process(
                command,
                terminator=_ContainerKiller(self.docker, name),
                stdin=stdin,
                wall_seconds=limits.wall_seconds,
                max_output_bytes=limits.max_output_bytes,
                env=_client_env(),
                stop=stop,
            )

        return await supervise(root, limits, owner, launch)

    def command(
        self,
        argv: Sequence[str],
        *,
        workspace: Path,
        limits: Limits,
        env: Mapping[str, str] | None = None,
        network: bool = False,
        name: str = "loopwise-sandbox",
    ) -> list[str]:
        """The ``docker run`` command line for one run."""
        mib = limits.memory_mb
        cpu = max(1, math.ceil(limits.cpu_seconds))
        file_bytes = limits.max_file_mb * 1024 * 1024
        command = [self.docker, "run", "--rm", "-i", "--name", name]
        command += [f"--network={'bridge' if network else 'none'}"]
        command += [f"--memory={mib}m", f"--memory-swap={mib}m", f"--cpus={self.cpus}"]
        command += [f"--pids-limit={limits.max_processes}", "--read-only"]
        command += ["--tmpfs", f"/tmp:rw,size={mib}m,mode=1777"]
        command += ["--user", self.user, "--cap-drop", "ALL"]
        command += ["--security-opt", "no-new-privileges"]
        command += ["--ulimit", f"cpu={cpu}:{cpu + 1}", "--ulimit", f"fsize={file_bytes}"]
        command += ["--ulimit", f"nofile={limits.max_open_files}", "--ulimit", "core=0"]
        command += ["-v", f"{workspace}:/workspace", "-w", "/workspace"]
        variables = {"HOME": "/tmp", "LANG": "C.UTF-8", **(env or {})}
        for key, value in variables.items():
            command += ["-e", f"{key}={value}"]
        return [*command, self.image, *argv]


class _ContainerKiller:
    """Kills the container by name (killing only the client would leave it running)."""

    def __init__(self, docker: str, name: str) -> None:
        self._docker = docker
        self._name = name
        self._process: asyncio.subprocess.Process | None = None

    def started(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            killer = await asyncio.create_subprocess_exec(
                self._docker,
                "kill",
                self._name,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=_client_env(),
            )
            async with asyncio.timeout(15):
                await killer.wait()
        kill_group(process)
        await self.wait_gone(5)

    async def wait_gone(self, grace: float) -> None:
        if self._process is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), grace)

    def close(self) -> None:
        self._process = None


def _client_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key in _CLIENT_ENV or key.startswith("DOCKER_")
    }


def _numeric_owner(user: str) -> tuple[int, int] | None:
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (gid or uid).isdigit():
        return int(uid), int(gid or uid)
    return None


@cache
def _engine_problem(docker: str) -> str | None:
    """Why no engine answers (``docker info``), or None when one does (once per process)."""
    if shutil.which(docker) is None:
        return f"{docker!r} not found"
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=15,
            env=_client_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0 or not done.stdout.strip():
        message = done.stderr.decode(errors="replace").strip() or "no engine answers"
        return message.splitlines()[-1][:300]
    return None
