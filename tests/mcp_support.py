"""Helpers for the MCP tests: the npm reference servers (installed under .cache/npm, or
``LOOPWISE_MCP_NPM``), a Streamable HTTP server-everything on a free port, results."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from loopwise.messages import ToolResultPart, UserMessage

ROOT = Path(__file__).parent.parent
NPM = Path(os.environ.get("LOOPWISE_MCP_NPM", ROOT / ".cache" / "npm")) / "node_modules"
EVERYTHING = NPM / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
FILESYSTEM = NPM / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
CONFORMANCE = NPM / "@modelcontextprotocol" / "conformance"
FIXTURE = ROOT / "tests" / "mcp_fixture_server.py"
INSTALL = (
    "npm install --prefix .cache/npm @modelcontextprotocol/server-everything "
    "@modelcontextprotocol/server-filesystem @modelcontextprotocol/conformance"
)


def need(*paths: Path) -> None:
    """Skip (fail under CI=true) when node or an npm package is missing."""
    missing = [str(p.relative_to(NPM)) for p in paths if not p.exists()]
    reason = ""
    if shutil.which("node") is None:
        reason = "node is not installed (apt-get install nodejs npm)"
    elif missing:
        reason = f"npm packages missing ({', '.join(missing)}); run: {INSTALL}"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MCP test needs {reason}")
        pytest.skip(reason)


def node() -> str:
    found = shutil.which("node")
    assert found is not None
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def everything_http(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """server-everything over Streamable HTTP: its URL and process."""
    need(EVERYTHING)
    port = port or free_port()
    env = {**os.environ, "PORT": str(port)}
    proc = subprocess.Popen(
        [node(), str(EVERYTHING), "streamableHttp"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        proc.kill()
        proc.wait(5)


def children(command_part: str) -> list[int]:
    """Our child processes whose command line contains ``command_part``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and command_part in cmd:
            found.append(int(pid))
    return found


def results(messages: Sequence[Any]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


PYTHON = sys.executable
