"""One live connection to an MCP server, owned by a task of its own.

The SDK's client is an async context manager whose task groups must be entered and left by
the same task; a run's ``start`` and ``end`` hooks run in different tasks, so a holder task
keeps the client open until :meth:`Connection.close`. Start-up failures come out as one
sentence (:class:`MCPStartError`) with the end of the server's stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import LoopwiseError, UsageError

logger = logging.getLogger(__name__)

__all__ = ["Connection", "HttpSpec", "MCPStartError", "StdioSpec"]

STDERR_TAIL = 4000


class MCPStartError(LoopwiseError):
    """An MCP server could not be started or reached, or failed its handshake."""


@dataclass(frozen=True, slots=True)
class StdioSpec:
    """A server started as a subprocess, spoken to over its stdin and stdout."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None

    def describe(self) -> str:
        return " ".join([self.command, *self.args])


@dataclass(frozen=True, slots=True)
class HttpSpec:
    """A server reached over Streamable HTTP."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return self.url


class StderrTail:
    """The last few thousand characters a server wrote to stderr (a pipe we drain)."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.file = os.fdopen(write_fd, "w")
        self._read = os.fdopen(read_fd, "rb", 0)
        self._buf = bytearray()
        self._eof = asyncio.Event()
        self._transport: asyncio.BaseTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tail = self

        class Reader(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                tail._buf += data
                del tail._buf[: -STDERR_TAIL * 2]

            def connection_lost(self, exc: Exception | None) -> None:
                tail._eof.set()

        self._transport, _ = await loop.connect_read_pipe(Reader, self._read)

    @property
    def ended(self) -> bool:
        """The server's stderr closed: the process has ended (or closed its stderr)."""
        return self._eof.is_set()

    def spawned(self) -> None:
        """Drop our copy of the write end, so EOF comes when the server's copies close."""
        if not self.file.closed:
            self.file.close()

    async def text(self, wait: float = 0.5) -> str:
        """The tail so far (waiting up to ``wait`` s for the server's stderr to close)."""
        self.spawned()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._eof.wait(), wait)
        text = self._buf.decode("utf-8", "replace").strip()
        return text[-STDERR_TAIL:]

    def close(self) -> None:
        self.spawned()
        if self._transport is not None:
            self._transport.close()
        else:
            self._read.close()


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class Connection:
    """A started client: ``client`` is usable until :meth:`close` or the server goes away."""

    def __init__(self, name: str, spec: StdioSpec | HttpSpec, options: Mapping[str, Any]):
        self.name = name
        self.spec = spec
        self.options = dict(options)
        self.client: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._holder: asyncio.Task[None] | None = None
        self._stderr: StderrTail | None = None

    async def open(self, limit: float) -> Any:
        """Start the server (stdio) or reach it (HTTP) and do the handshake."""
        try:
            import mcp  # noqa: F401
        except ImportError:
            raise UsageError(
                "MCP servers need the mcp package: pip install 'loopwise[mcp]'."
            ) from None
        self.loop = asyncio.get_running_loop()
        ready: asyncio.Future[Any] = self.loop.create_future()
        if isinstance(self.spec, StdioSpec):
            self._stderr = StderrTail()
            await self._stderr.start()
        self._holder = asyncio.create_task(self._hold(ready), name=f"mcp:{self.name}")
        try:
            async with asyncio.timeout(limit):
                self.client = await asyncio.shield(ready)
        except TimeoutError:
            await self.close()
            raise MCPStartError(
                f"MCP server {self.name!r} did not finish its handshake within {limit:g} s."
            ) from None
        except MCPStartError:
            await self.close()
            raise
        except BaseException:
            await self.close()
            raise
        return self.client

    async def _hold(self, ready: asyncio.Future[Any]) -> None:
        try:
            async with self._client() as client:
                if self._stderr is not None:
                    self._stderr.spawned()
                ready.set_result(client)
                await self._stop.wait()
        except BaseException as exc:  # the holder reports through ``ready``
            if ready.done():
                logger.debug("MCP server %r: connection ended: %r", self.name, exc)
            else:
                error = await self._start_error(_leaf(exc))
                if isinstance(error, asyncio.CancelledError):
                    ready.cancel()
                else:
                    ready.set_exception(error)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.client = None

    def _client(self) -> Any:
        from mcp import Client, StdioServerParameters

        spec = self.spec
        if isinstance(spec, StdioSpec):
            assert self._stderr is not None
            params = StdioServerParameters(
                command=spec.command, args=list(spec.args), env=dict(spec.env or {}), cwd=spec.cwd
            )
            from mcp.client.stdio import stdio_client

            return Client(stdio_client(params, errlog=self._stderr.file), **self.options)
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        http = create_mcp_http_client(headers=dict(spec.headers))
        return Client(streamable_http_client(spec.url, http_client=http), **self.options)

    async def _start_error(self, exc: BaseException) -> BaseException:
        """One sentence for a failed start (the server's stderr appended for stdio)."""
        if isinstance(exc, asyncio.CancelledError):
            return exc
        spec = self.spec
        if isinstance(spec, HttpSpec):
            reason = str(exc) or type(exc).__name__
            return MCPStartError(
                f"MCP server {self.name!r} at {spec.url} could not be reached or refused the "
                f"handshake ({type(exc).__name__}: {reason})."
            )
        if isinstance(exc, FileNotFoundError):
            return MCPStartError(
                f"MCP server {self.name!r} could not start: command {spec.command!r} was not found."
            )
        if isinstance(exc, PermissionError):
            return MCPStartError(
                f"MCP server {self.name!r} could not start: command {spec.command!r} "
                "is not executable."
            )
        stderr = await self._stderr.text() if self._stderr is not None else ""
        shown = f" Its stderr ends with:\n{stderr}" if stderr else " It wrote nothing to stderr."
        return MCPStartError(
            f"MCP server {self.name!r} ({spec.describe()[:200]}) stopped during start-up "
            f"({type(exc).__name__}: {exc}).{shown}"
        )

    def alive(self) -> bool:
        """False once the server has gone away (process ended, stream closed)."""
        client = self.client
        if client is None or self._holder is None or self._holder.done():
            return False
        if self._stderr is not None and self._stderr.ended:
            return False
        session = getattr(client, "_session", None)
        dispatcher = getattr(session, "_dispatcher", None)
        return not getattr(dispatcher, "_closed", False)

    async def stderr(self) -> str:
        return await self._stderr.text(wait=0.2) if self._stderr is not None else ""

    async def close(self, grace: float = 8.0) -> None:
        """Leave the client (the SDK stops a stdio server: stdin closed, then signals)."""
        self._stop.set()
        holder = self._holder
        if holder is not None and not holder.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait({holder}, timeout=grace)
            if not holder.done():
                holder.cancel()
                await asyncio.wait({holder}, timeout=2.0)
        if self._stderr is not None:
            self._stderr.close()
        self.client = None
