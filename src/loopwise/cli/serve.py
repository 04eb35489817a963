"""``loopwise serve`` (HTTP API + in-process workers) and ``loopwise worker`` (workers only).

Both load the agents by import path and run the durable engine on one database: a SQLite
file under the data directory by default, or ``--database postgresql://...`` shared by
many processes. FastAPI, uvicorn and DBOS are imported only when a command runs.

Exit codes: 0 after a clean shutdown (Ctrl-C or SIGTERM), 1 when the engine or the server
cannot start (database unreachable, port taken), 2 usage error (bad agents module,
database URL or key).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ..datadir import data_dir
from ..errors import LoopwiseError, UsageError
from .display import printable

if TYPE_CHECKING:
    from ..durable import DurableEngine
    from ..server import AuthSetup
    from ..server.limits import ConnectionLimits

__all__ = ["running", "serve", "worker"]

EXIT_USAGE = 2

AgentsOption = Annotated[
    str,
    typer.Option(
        "--agents",
        help="Module with your agents: Agent objects, or a dict name -> Agent "
        "(e.g. myproject.agents).",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="Database URL: sqlite:///path.db or postgresql://... "
        "(default: a SQLite file in the data directory).",
        show_default=False,
    ),
]
ExecutorOption = Annotated[
    str | None,
    typer.Option(
        "--executor-id",
        help="This process's stable worker id (default: HOST-N, the first free slot here).",
        show_default=False,
    ),
]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, help="Runs this process works on at once.")
]


def serve(
    agents: AgentsOption,
    host: Annotated[
        str, typer.Option(help="Address to bind; beyond loopback a key is required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    database: DatabaseOption = None,
    executor_id: ExecutorOption = None,
    workers: Annotated[
        bool, typer.Option("--workers/--no-workers", help="Run agents in this process too.")
    ] = True,
    concurrency: ConcurrencyOption = 8,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="A key clients must send as 'Authorization: Bearer KEY', or NAME:KEY to name "
            "its principal (repeatable; also LOOPWISE_API_KEYS, comma-separated).",
            show_default=False,
        ),
    ] = None,
    keys_file: Annotated[
        Path | None,
        typer.Option(
            "--keys-file",
            envvar="LOOPWISE_KEYS_FILE",
            help="JSON or TOML file of keys and their principals (name, agents, memory, admin).",
            show_default=False,
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Loopback only: no key at all (any local user or process may run agents).",
        ),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="A name clients may use in the Host header besides the bound address and "
            "localhost (repeatable; also LOOPWISE_ALLOWED_HOSTS; '*' turns the check off).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    max_connections: Annotated[
        int, typer.Option(min=2, help="Open connections at most (the oldest idle one yields).")
    ] = 1000,
    header_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request's headers may take to arrive.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request's body may take to arrive.")
    ] = 30.0,
) -> None:
    """Serve the HTTP API (/v1, docs at /docs) with in-process workers."""
    try:
        from ..server import create_app
        from ..server.limits import ConnectionLimits

        auth = _auth(api_key, keys_file, host, no_auth)
        engine = _engine(agents, database, executor_id, workers, concurrency)
        app = create_app(
            engine,
            api_keys=auth.keys,
            require_auth=auth.require_auth,
            manage_engine=False,
            bound_host=host,
            allowed_hosts=[*(allowed_host or []), *_env_list("LOOPWISE_ALLOWED_HOSTS")],
        )
        limits = ConnectionLimits(
            header_seconds=header_timeout,
            body_seconds=body_timeout,
            max_connections=max_connections,
        )
    except LoopwiseError as exc:
        _fail(exc)
    options = {"host": host, "port": port, "log_level": log_level, "limits": limits}
    raise typer.Exit(asyncio.run(_serve(app, engine, auth, options)))


def worker(
    agents: AgentsOption,
    database: DatabaseOption = None,
    executor_id: ExecutorOption = None,
    concurrency: ConcurrencyOption = 8,
) -> None:
    """Run agents from the database's queue (no HTTP) until SIGTERM or Ctrl-C."""
    try:
        engine = _engine(agents, database, executor_id, True, concurrency)
    except LoopwiseError as exc:
        _fail(exc)
    asyncio.run(_work(engine))


def _env_list(name: str) -> list[str]:
    return [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]


def _auth(api_key: list[str] | None, keys_file: Path | None, host: str, no_auth: bool) -> AuthSetup:
    """The keys: configured ones, a keys file's, else a generated admin key (see auth)."""
    from ..server.auth import ApiKeys, resolve_auth
    from ..server.principals import load_keys_file

    keys = list(api_key or []) + _env_list("LOOPWISE_API_KEYS")
    extra = ApiKeys(tuple(load_keys_file(keys_file))) if keys_file is not None else None
    configured = bool(keys or extra or no_auth)
    return resolve_auth(
        keys, host=host, data_dir=data_dir(create=not configured), extra=extra, no_auth=no_auth
    )


def _engine(
    agents: str, database: str | None, executor_id: str | None, workers: bool, concurrency: int
) -> DurableEngine:
    from ..durable import DurableEngine, load_agents

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    loaded = load_agents(agents)
    if not loaded:
        raise UsageError(f"--agents {agents!r}: the module has no loopwise Agent in it.")
    return DurableEngine(
        loaded,
        database=database,
        executor_id=executor_id,
        workers=workers,
        concurrency=concurrency,
    )


@contextlib.asynccontextmanager
async def running(engine: DurableEngine) -> AsyncIterator[None]:
    """The engine started (a failure is one line on stderr and exit 1, or 2 for a usage
    error such as a bad database URL), and stopped afterwards."""
    try:
        await engine.start()
    except Exception as exc:
        _fail(exc)
    try:
        yield
    finally:
        await engine.stop()


async def _serve(app: Any, engine: DurableEngine, auth: AuthSetup, options: dict[str, Any]) -> int:
    """Start the engine first, so that a database problem is reported before binding."""
    async with running(engine):
        return await _uvicorn(app, auth, **options)


async def _uvicorn(
    app: Any, auth: AuthSetup, *, host: str, port: int, log_level: str, limits: ConnectionLimits
) -> int:
    import uvicorn

    from ..server.limits import fit_to_descriptors, uvicorn_config

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                _announce(self, host, auth)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                # Shut down gracefully: exit 0 instead of re-raising SIGINT/SIGTERM.
                self._captured_signals.clear()

    config = uvicorn_config(
        app,
        limits=fit_to_descriptors(limits),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits when it cannot bind (it logged why)
        return 1
    return 0 if server.started else 1


def _announce(server: Any, host: str, auth: AuthSetup) -> None:
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"loopwise serving http://{shown}:{bound} (API /v1, docs /docs)")
    if auth.generated_key is not None:
        typer.echo(
            f"API key (shown only now; its SHA-256 is kept in {auth.key_file}): "
            f"{auth.generated_key}"
        )
    elif auth.local:
        typer.echo(
            f"API key: in {auth.key_file} (readable by you only; `loopwise runs` and "
            "`loopwise approve` use it)"
        )
    elif auth.key_file is not None:
        typer.echo(f"API keys: those hashed in {auth.key_file} (delete it to make a new key)")
    elif not auth.require_auth:
        typer.echo("no API key needed (--no-auth): any local user or process may use the API")
    else:
        names = sorted({p.name for _, p in auth.keys.entries})
        typer.echo(
            printable(f"API keys: {len(auth.keys.entries)} configured, for {', '.join(names)}")
        )
    sys.stdout.flush()


async def _work(engine: DurableEngine) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(engine):
        typer.echo(f"worker {engine.executor_id} running; stop it with Ctrl-C or SIGTERM", err=True)
        await stop.wait()
        typer.echo("worker stopping", err=True)


def _fail(exc: Exception) -> NoReturn:
    typer.echo(printable(" ".join(f"error: {exc}".split())), err=True)
    raise typer.Exit(EXIT_USAGE if isinstance(exc, UsageError) else 1)
