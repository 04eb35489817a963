"""Run untrusted code behind an OS boundary: bubblewrap namespaces, or a Docker container.

There is no in-process fallback: when neither backend works, :func:`default_sandbox`
raises :class:`SandboxUnavailable` naming what to install.

>>> from loopwise.sandbox import Limits, default_sandbox
>>> sandbox = default_sandbox()                                  # doctest: +SKIP
>>> result = await sandbox.run(["python3", "-c", "print(2 + 2)"],  # doctest: +SKIP
...                            workspace="work", limits=Limits(wall_seconds=10))
>>> result.stdout                                                # doctest: +SKIP
'4\\n'
"""

from __future__ import annotations

from .api import INSTALL_HINT, Limits, Sandbox, SandboxResult, SandboxUnavailable
from .bubblewrap import BubblewrapSandbox
from .docker import DockerSandbox

__all__ = [
    "BubblewrapSandbox",
    "DockerSandbox",
    "Limits",
    "Sandbox",
    "SandboxResult",
    "SandboxUnavailable",
    "default_sandbox",
]


def default_sandbox() -> Sandbox:
    """bubblewrap when it works here, else Docker when an engine answers (probes cached).

    Raises :class:`SandboxUnavailable` when neither can run.
    """
    bubblewrap = BubblewrapSandbox()
    try:
        bubblewrap.check()
    except SandboxUnavailable as exc:
        bubblewrap_problem = str(exc).split(";")[0]
    else:
        return bubblewrap
    docker = DockerSandbox()
    try:
        docker.check()
    except SandboxUnavailable as exc:
        docker_problem = str(exc).split(";")[0]
    else:
        return docker
    raise SandboxUnavailable(
        f"No sandbox can run code here: {bubblewrap_problem}; {docker_problem}. "
        f"To fix it, {INSTALL_HINT}."
    )
