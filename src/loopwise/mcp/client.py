"""An MCP server's tools in an agent: :class:`MCPServer`, a toolset capability.

The server is started (stdio) or reached (HTTP) when a run starts, its tools are listed and
added to the run, and it is stopped when the last run using it ends (or when an
``async with server:`` block holding it open ends). A server that went away is started
again for the next request; a listing is retried once, a tool call that may have run is
reported to the model, never silently repeated.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from ..capabilities import Capability
from ..errors import UsageError
from ..tools import DEFAULT_MAX_OUTPUT_CHARS, Tool, ToolContext, ToolFailed
from .connection import Connection, HttpSpec, MCPStartError, StdioSpec
from .results import (
    AskPolicy,
    content_to_result,
    description_of,
    error_text,
    policy_for,
    schema_of,
    tool_names,
)
from .sampling import SamplingBridge

if TYPE_CHECKING:
    from ..run import RunContext

__all__ = ["ElicitHandler", "MCPServer", "ProgressHandler"]

logger = logging.getLogger(__name__)

ElicitHandler: TypeAlias = Callable[
    [str, Mapping[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"
]
"""Answers an elicitation: the server's message and requested schema in, the content out
(``None`` declines)."""
ProgressHandler: TypeAlias = Callable[[str, float, "float | None", "str | None"], None]
"""Sees a call's progress: tool name, progress, total, message."""

CONNECTION_CLOSED = -32000
REQUEST_TIMEOUT = -32001
_LOST = "Connection closed"
_HTTP_ERROR = "Server returned an error response"


class MCPServer(Capability):
    """An MCP server as a toolset: ``MCPServer.stdio(...)`` or ``MCPServer.http(...)``.

    ``prefix`` names its tools ``<prefix>_<tool>``; ``include`` / ``exclude`` filter them by
    the server's names (glob patterns). ``timeout`` bounds one call (seconds), ``ask``
    chooses which calls wait for a human (``destructive`` by the tool's annotations,
    ``always``, ``never``); ``trusted`` marks the output as free of third-party
    instructions (default: untrusted). ``sampling`` lets the server ask the run's model
    (within the run's budget); ``elicitation`` answers the server's questions.
    """

    def __init__(
        self,
        spec: StdioSpec | HttpSpec,
        *,
        name: str | None = None,
        prefix: str | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        timeout: float | None = 60.0,
        connect_timeout: float = 30.0,
        ask: AskPolicy = "destructive",
        trusted: bool = False,
        sampling: bool = False,
        elicitation: ElicitHandler | None = None,
        on_progress: ProgressHandler | None = None,
        protocol: str = "auto",
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    ):
        if ask not in ("destructive", "always", "never"):
            raise UsageError(f"ask= must be 'destructive', 'always' or 'never', not {ask!r}.")
        if prefix is not None and not prefix.replace("_", "").replace("-", "").isalnum():
            raise UsageError(f"MCP prefix {prefix!r} must be letters, digits, '_' or '-'.")
        self.spec = spec
        self.name = name or _default_name(spec)
        self.prefix = prefix
        self.include = tuple(include) if include is not None else None
        self.exclude = tuple(exclude)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ask: AskPolicy = ask
        self.trusted = trusted
        self.elicitation = elicitation
        self.on_progress = on_progress
        self.protocol = protocol
        self.max_output_chars = max_output_chars
        self.skipped: dict[str, str] = {}
        """Tools the server offered that could not be used, with the reason."""
        self.tools_changed = False
        """Set when the server said its tool list changed (the next run lists them again)."""
        self.restarts = 0
        self._sampling = SamplingBridge() if sampling else None
        self._conn: Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._users = 0
        self._held = 0

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **options: Any,
    ) -> MCPServer:
        """A server started as ``command args`` (only PATH, HOME and a few other variables
        of ours are passed on, plus ``env``)."""
        if not command:
            raise UsageError("MCPServer.stdio needs a command to run.")
        return cls(StdioSpec(command, tuple(args), dict(env) if env else None, cwd), **options)

    @classmethod
    def http(
        cls, url: str, *, headers: Mapping[str, str] | None = None, **options: Any
    ) -> MCPServer:
        """A server reached over Streamable HTTP at ``url`` (``headers`` sent with each
        request, e.g. an Authorization header)."""
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"MCP server URL must start with http:// or https://, not {url!r}.")
        return cls(HttpSpec(url, dict(headers or {})), **options)

    def label(self) -> str:
        return f"mcp:{self.name}"

    @property
    def protocol_version(self) -> str | None:
        """The protocol revision negotiated with the server (None when not connected)."""
        client = self._conn.client if self._conn is not None else None
        return str(client.protocol_version) if client is not None else None

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> MCPServer:
        self._held += 1
        try:
            await self._live()
        except BaseException:
            self._held -= 1
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._held -= 1
        await self._release()

    async def aclose(self) -> None:
        """Stop the server (or leave the HTTP session) now."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def start(self, run: RunContext) -> None:
        self._users += 1
        if self._sampling is not None:
            self._sampling.runs.append(run)
        try:
            await self._live()
        except BaseException:
            await self.end(run)
            raise

    async def end(self, run: RunContext) -> None:
        if self._sampling is not None and run in self._sampling.runs:
            self._sampling.runs.remove(run)
        self._users = max(self._users - 1, 0)
        await self._release()

    async def _release(self) -> None:
        if self._users == 0 and self._held == 0:
            await self.aclose()

    async def _live(self) -> Any:
        """The SDK client of a live connection, starting the server when there is none."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        await asyncio.sleep(0)  # let a pending end-of-stream (the server died) be seen
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.loop is not asyncio.get_running_loop():
                raise UsageError(
                    f"MCP server {self.name!r} is held open in another event loop; "
                    "use it from the loop that opened it."
                )
            if conn is not None and conn.alive():
                return conn.client
            if conn is not None:
                self.restarts += 1
                logger.warning("MCP server %r went away; starting it again", self.name)
                await conn.close()
            self._conn = Connection(self.name, self.spec, self._client_options())
            try:
                return await self._conn.open(self.connect_timeout)
            except BaseException:
                self._conn = None
                raise

    def _client_options(self) -> dict[str, Any]:
        from mcp.types import Implementation

        from .. import __version__

        options: dict[str, Any] = {
            "mode": self.protocol,
            "message_handler": self._on_message,
            "client_info": Implementation(name="loopwise", version=__version__),
        }
        if self._sampling is not None:
            options["sampling_callback"] = self._sampling.callback
        if self.elicitation is not None:
            options["elicitation_callback"] = self._elicit
        return options

    async def _on_message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if method == "notifications/tools/list_changed":
            self.tools_changed = True

    def _lost(self) -> None:
        """Forget a connection that failed mid-request (the next request starts anew)."""
        conn = self._conn
        if conn is not None and not conn.alive():
            return
        if conn is not None:
            conn.client = None  # alive() is now False: the next request reconnects

    # -- requests -------------------------------------------------------------------------

    async def _retrying(self, request: Callable[[Any], Awaitable[Any]]) -> Any:
        """``request(client)``, once more on a fresh connection if the first was lost
        (for requests that change nothing on the server: listings, reads)."""
        client = await self._live()
        try:
            return await request(client)
        except Exception as exc:
            if not _is_lost(exc) and not await self._session_gone(client, exc):
                raise
        self._lost()
        return await request(await self._live())

    async def list_tools(self) -> list[Any]:
        """The server's tools (every page), as the SDK's ``Tool`` objects."""

        async def listing(client: Any) -> list[Any]:
            found: list[Any] = []
            cursor: str | None = None
            for _ in range(100):
                page = await client.list_tools(cursor=cursor, cache_mode="refresh")
                found.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            return found

        found: list[Any] = await self._retrying(listing)
        self.tools_changed = False
        return found

    async def read_resource(self, uri: str) -> Any:
        """The resource at ``uri`` (the SDK's ``ReadResourceResult``)."""
        return await self._retrying(lambda c: c.read_resource(uri))

    async def list_resources(self) -> Any:
        return await self._retrying(lambda c: c.list_resources())

    async def list_prompts(self) -> Any:
        return await self._retrying(lambda c: c.list_prompts())

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None = None) -> Any:
        """The prompt ``name`` filled with ``arguments`` (the SDK's ``GetPromptResult``)."""
        return await self._retrying(lambda c: c.get_prompt(name, dict(arguments or {})))

    # -- tools ----------------------------------------------------------------------------

    async def tools(self, run: RunContext) -> Sequence[Tool]:
        return await self.make_tools(taken=run.tools)

    async def make_tools(self, taken: Iterable[str] = ()) -> list[Tool]:
        """The server's tools as loopwise tools (filtered, named, with their policies)."""
        remote = {t.name: t for t in await self.list_tools() if self._wanted(str(t.name))}
        self.skipped = {}
        made: list[Tool] = []
        for local, name in tool_names(remote, self.prefix, taken).items():
            try:
                made.append(self._tool(local, remote[name]))
            except UsageError as exc:
                self.skipped[name] = str(exc)
                logger.warning("MCP server %r: tool %r left out: %s", self.name, name, exc)
        return made

    def _wanted(self, name: str) -> bool:
        if self.include is not None and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def _tool(self, local: str, remote: Any) -> Tool:
        policy = policy_for(getattr(remote, "annotations", None), self.ask)
        remote_name = str(remote.name)

        async def call(ctx: ToolContext[Any], /, **arguments: Any) -> Any:
            return await self.call_tool(remote_name, arguments, ctx)

        return Tool.from_schema(
            local,
            description_of(remote, self.name),
            schema_of(remote),
            call,
            takes_context=True,
            requires_approval=policy.requires_approval,
            idempotent=policy.idempotent,
            trusted=self.trusted,
            effects=policy.effects,
            max_output_chars=self.max_output_chars,
        )

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], ctx: ToolContext[Any] | None = None
    ) -> Any:
        """Call the server's tool ``name``; the result as text or text and images.

        Errors come out as :class:`ToolFailed` with the observation the model sees."""
        progress = self._progress(name, ctx)
        for attempt in (1, 2):
            client = await self._live()  # a server found dead before sending: restarted
            try:
                result = await client.call_tool(
                    name, dict(arguments), read_timeout_seconds=self.timeout,
                    progress_callback=progress,
                )  # fmt: skip
            except Exception as exc:
                if attempt == 1 and await self._session_gone(client, exc):
                    self._lost()
                    continue  # the server refused it before running it: safe to send again
                raise self._failure(name, exc) from exc
            return self._result(name, result)
        raise AssertionError("unreachable")

    async def _session_gone(self, client: Any, exc: Exception) -> bool:
        """The server refused ``exc``'s request because it no longer knows our session
        (expired, or the server restarted): nothing ran, a new session may send it again.

        Said outright (404 / "session" errors), or an HTTP error response after which a
        listing (changes nothing) on the same session fails too."""
        if _is_lost(exc):
            return False
        if _is_rejected_session(exc):
            return True
        if not isinstance(self.spec, HttpSpec) or _HTTP_ERROR not in str(exc):
            return False
        try:
            async with asyncio.timeout(5):
                await client.list_tools(cache_mode="refresh")
        except Exception:
            return True
        return False

    def _result(self, name: str, result: Any) -> Any:
        if result.is_error:
            raise ToolFailed(
                f"ERROR: MCP tool {name!r} reported an error: {error_text(result.content)}"
            )
        return content_to_result(result.content, result.structured_content)

    def _failure(self, name: str, exc: Exception) -> ToolFailed:
        code = getattr(exc, "code", None)
        if code == REQUEST_TIMEOUT:
            return ToolFailed(
                f"ERROR: TimeoutError: MCP tool {name!r} did not finish within {self.timeout:g} s "
                "and was cancelled. Hint: try a smaller request or another approach."
            )
        if _is_lost(exc):
            self._lost()
            return ToolFailed(
                f"ERROR: the connection to MCP server {self.name!r} was lost during this call "
                f"of {name!r}; the call may or may not have run, so it was not repeated. The "
                "server is started again for the next call: check the state before retrying."
            )
        if isinstance(exc, RuntimeError) and "schema" in str(exc).lower():
            return ToolFailed(
                f"ERROR: MCP tool {name!r} returned a result that does not match its "
                f"outputSchema: {str(exc)[:500]}"
            )
        message = getattr(getattr(exc, "error", None), "message", None) or str(exc)
        return ToolFailed(
            f"ERROR: MCP server {self.name!r} refused the call of {name!r}: {message[:1000]}"
        )

    def _progress(self, name: str, ctx: ToolContext[Any] | None) -> Any:
        if self.on_progress is None and (ctx is None or ctx.run is None or ctx.run.emit is None):
            return None

        async def progress(value: float, total: float | None, message: str | None) -> None:
            if self.on_progress is not None:
                self.on_progress(name, value, total, message)
            if ctx is not None and ctx.run is not None and ctx.run.emit is not None:
                _emit_progress(ctx, value, total, message)

        return progress

    async def _elicit(self, context: Any, params: Any) -> Any:
        from mcp.types import ElicitResult

        assert self.elicitation is not None
        schema = getattr(params, "requested_schema", None) or {}
        message = str(getattr(params, "message", ""))[:4000]
        try:
            answer = self.elicitation(message, schema)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            logger.exception("MCP server %r: elicitation handler failed", self.name)
            return ElicitResult(action="cancel")
        if answer is None:
            return ElicitResult(action="decline")
        return ElicitResult(action="accept", content=_with_defaults(dict(answer), schema))


def _emit_progress(
    ctx: ToolContext[Any], value: float, total: float | None, msg: str | None
) -> None:
    """A ``ToolProgress`` event on the run's stream, when the core defines one."""
    from .. import events

    event_type = getattr(events, "ToolProgress", None)
    if event_type is None or ctx.run is None or ctx.run.emit is None:
        return
    ctx.run.emit(
        event_type(
            run_id=ctx.run_id, step=ctx.step, call_id=ctx.call_id, name=ctx.tool_name,
            progress=value, total=total, message=(msg or "")[:500],
        )
    )  # fmt: skip


def _with_defaults(content: dict[str, Any], schema: Any) -> dict[str, Any]:
    """The answer with the schema's defaults for the fields it leaves out (SEP-1034)."""
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    for name, spec in props.items() if isinstance(props, Mapping) else ():
        if name not in content and isinstance(spec, Mapping) and "default" in spec:
            content[name] = spec["default"]
    return content


def _is_lost(exc: BaseException) -> bool:
    """The connection ended (the process died, the stream closed)."""
    return getattr(exc, "code", None) == CONNECTION_CLOSED and _LOST in str(exc)


def _is_rejected_session(exc: BaseException) -> bool:
    """The server refused the request for its session (expired, unknown after a restart):
    nothing ran, and a new session may send it again."""
    if _is_lost(exc):
        return False
    text = str(exc).lower()
    return "session" in text and getattr(exc, "code", None) in (CONNECTION_CLOSED, -32600)


def _default_name(spec: StdioSpec | HttpSpec) -> str:
    """A short name: the package a launcher (npx, uvx, node...) runs, else the command's
    file name; the host of a URL."""
    if isinstance(spec, HttpSpec):
        from urllib.parse import urlsplit

        return urlsplit(spec.url).hostname or "mcp"
    base = spec.command.rstrip("/").rsplit("/", 1)[-1]
    if base.split(".")[0].rstrip("0123456789.") in _LAUNCHERS:
        for word in spec.args:
            if not word.startswith("-"):
                return _package_name(word)
    return base or "mcp"


def _package_name(word: str) -> str:
    """``@scope/pkg@1.2`` -> ``pkg``; ``.../server-x/dist/index.js`` -> ``server-x``."""
    parts = [p for p in word.split("/") if p]
    while parts:
        name = parts.pop().split("@")[0]
        for ext in (".py", ".js", ".mjs", ".cjs", ".ts"):
            name = name.removesuffix(ext)
        if name and name not in _GENERIC:
            return name
    return "mcp"


_GENERIC = frozenset({"index", "main", "cli", "server", "dist", "build", "lib", "src", "bin", "."})
_LAUNCHERS = frozenset({"npx", "uvx", "node", "python", "bunx", "pnpx", "deno", "pipx", "uv"})


__all__ += ["MCPStartError"]
