"""The HTTP API: runs under ``/v1`` (create, get, list, events, cancel, approve), agents, health.

``create_app(engine, ...)`` builds the FastAPI application around a durable engine. The
application starts and stops the engine with itself (``manage_engine=False`` leaves that
to the caller). Errors always have the shape ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, cast

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from starlette.responses import StreamingResponse

from .. import __version__
from ..agent import Agent
from ..durable.records import InvalidArguments, NotFound, RunRecord, StoredEvent
from .auth import ApiKeys, BearerAuth
from .errors import ApiError, BodyLimit, install_error_handlers
from .hosts import AllowedHosts, HostGuard
from .memory_routes import memory_router
from .openapi import SSE_EVENT_SCHEMA, error_responses, openapi
from .principals import LOCAL, Principal
from .schemas import (
    NO_NUL,
    AgentInfo,
    AgentList,
    ApproveIn,
    DecisionIn,
    Health,
    RunCreate,
    RunList,
    RunOut,
    RunStatus,
    ToolInfo,
)
from .sse import event_stream, open_stream_slot

__all__ = ["MAX_BODY_BYTES", "RunEngine", "ServerSettings", "create_app"]

MAX_BODY_BYTES = 1 << 20
OPEN_PATHS = ("/healthz",)


class RunEngine(Protocol):
    """What the API needs from the durable engine (:class:`loopwise.durable.DurableEngine`)."""

    @property
    def agents(self) -> Mapping[str, Agent[Any, Any]]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(
        self,
        agent: str,
        input: str,
        *,
        model: str | None = None,
        budget: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        principal: str | None = None,
        memory_key: str | None = None,
    ) -> RunRecord: ...

    async def get(self, run_id: str) -> RunRecord: ...

    async def list(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        principal: str | None = None,
    ) -> tuple[builtins.list[RunRecord], str | None]: ...

    async def events(
        self, run_id: str, *, after: int = 0, limit: int = 500
    ) -> builtins.list[StoredEvent]: ...

    async def cancel(self, run_id: str) -> RunRecord: ...

    async def decide(
        self,
        run_id: str,
        call_id: str,
        *,
        approve: bool,
        arguments: dict[str, Any] | None = None,
        reason: str | None = None,
        principal: str | None = None,
    ) -> RunRecord: ...


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Timings of the event stream (small in tests): heartbeat, engine polling, and how long
    one connection may stream before it is closed (clients reconnect with Last-Event-ID);
    how many streams one API key may hold open at once (429 beyond)."""

    heartbeat_seconds: float = 15.0
    poll_seconds: float = 0.2
    max_stream_seconds: float = 3600.0
    max_streams_per_key: int = 64


def create_app(
    engine: RunEngine,
    *,
    api_keys: ApiKeys | Collection[str] = (),
    require_auth: bool,
    settings: ServerSettings | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    manage_engine: bool = True,
    bound_host: str | None = None,
    allowed_hosts: Collection[str] = (),
) -> FastAPI:
    """The API over ``engine``; with ``require_auth`` every route but /healthz needs a key.

    Requests must name this server in ``Host``: localhost, a loopback address,
    ``bound_host`` (None: any IP address) or one of ``allowed_hosts`` (see
    :mod:`loopwise.server.hosts`); without ``require_auth`` cross-site requests that change
    something are refused too."""
    keys = api_keys if isinstance(api_keys, ApiKeys) else ApiKeys.of(api_keys)
    if require_auth and not keys:
        raise ValueError("require_auth=True needs at least one API key.")
    hosts = AllowedHosts(bound_host, allowed_hosts)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_engine:
            await engine.start()
        try:
            yield
        finally:
            if manage_engine:
                await engine.stop()

    app = FastAPI(
        title="loopwise",
        version=__version__,
        summary="Durable runs of tool-using LLM agents, with human approval.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.settings = settings or ServerSettings()
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(memory_router)
    app.state.routes = [*router.routes, *app.routes]  # for the Allow header of a 405
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(BearerAuth, keys=keys, required=require_auth, open_paths=OPEN_PATHS)
    app.add_middleware(HostGuard, allowed=hosts, keyless=not require_auth)  # outermost
    agents = sorted(engine.agents)
    remembering = [n for n in agents if getattr(engine.agents[n], "memory", None) is not None]
    app.openapi = lambda: openapi(  # type: ignore[method-assign]
        app, agents, secured=require_auth, open_paths=OPEN_PATHS, memory_agents=remembering
    )
    from .console import mount_console

    mount_console(app)  # the web console at /, AG-UI routes, /docs served offline
    return app


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response (FastAPI's own SSE class wants a generator endpoint)."""

    media_type = "text/event-stream"


# -- routes -------------------------------------------------------------------------------

router = APIRouter()


def _engine(request: Request) -> RunEngine:
    return cast(RunEngine, request.app.state.engine)


def _principal(request: Request) -> Principal:
    """Who is calling (set by :class:`BearerAuth`; without required keys: LOCAL)."""
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else LOCAL


EngineDep = Annotated[RunEngine, Depends(_engine)]
PrincipalDep = Annotated[Principal, Depends(_principal)]


async def visible_run(engine: RunEngine, run_id: str, principal: Principal) -> RunRecord:
    """The run if ``principal`` may see it; a 404 like a missing run's otherwise."""
    record = await engine.get(run_id)
    if not principal.owns(record.principal):
        raise NotFound(f"No run has the id {run_id!r}.")
    return record


def visible_agents(engine: RunEngine, principal: Principal) -> builtins.list[str]:
    return sorted(name for name in engine.agents if principal.may_use(name))


def _memory_key(metadata: dict[str, Any] | None, principal: Principal) -> str | None:
    """The memory namespace key a run uses: the requested ``memory_key`` within the
    principal's namespace (None for an admin: the metadata's own)."""
    requested = (metadata or {}).get("memory_key", "")
    if not isinstance(requested, str):
        raise ApiError(422, "invalid_request", "Invalid metadata.memory_key: it must be text.")
    return None if principal.admin else principal.memory_key(requested)


RunId = Annotated[str, Path(max_length=200, pattern=NO_NUL, description="The run's id.")]
CallId = Annotated[str, Path(max_length=200, pattern=NO_NUL, description="The tool call's id.")]
MAX_EVENT_ID = 999_999_999  # event numbers are 32-bit in the database


@router.get("/healthz", tags=["service"], summary="Liveness (no key needed)")
async def healthz() -> Health:
    return Health(status="ok")


@router.post(
    "/v1/runs",
    status_code=202,
    tags=["runs"],
    summary="Start a run",
    responses=error_responses(404, 413, 422),
)
async def create_run(
    body: RunCreate,
    engine: EngineDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            pattern=r"^[!-~]+$",
            description="The same key returns the same run instead of starting another.",
        ),
    ] = None,
) -> RunOut:
    """Queue a run of a registered agent; it is stored before this answers (202). The same
    Idempotency-Key with the same body returns the same run; with another body, 422."""
    agents = visible_agents(engine, principal)
    if body.agent not in agents:
        known = ", ".join(agents) or "none"
        raise ApiError(404, "not_found", f"No agent is named {body.agent!r}; known: {known}.")
    budget = body.budget.model_dump(exclude_none=True) if body.budget else None
    record = await engine.submit(
        body.agent,
        body.input,
        model=body.model,
        budget=budget,
        metadata=body.metadata,
        idempotency_key=idempotency_key,
        principal=principal.name,
        memory_key=_memory_key(body.metadata, principal),
    )
    response.headers["Location"] = f"/v1/runs/{record.id}"
    return RunOut.of(record)


@router.get("/v1/runs", tags=["runs"], summary="List runs", responses=error_responses(404, 422))
async def list_runs(
    engine: EngineDep,
    principal: PrincipalDep,
    status: Annotated[RunStatus | None, Query(description="Only runs in this state.")] = None,
    agent: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=500, pattern=r"^[A-Za-z0-9_-]+$", description="next_cursor of a page."),
    ] = None,
) -> RunList:
    """Runs, newest first, a page at a time (the caller's own; an admin's: all). A cursor
    this server did not give is a 404."""
    try:
        records, next_cursor = await engine.list(
            status=status,
            agent=agent,
            limit=limit,
            cursor=cursor,
            principal=None if principal.admin else principal.name,
        )
    except InvalidArguments:
        if cursor is None:
            raise
        raise ApiError(
            404, "not_found", "The cursor names no page of this list; list again without it."
        ) from None
    return RunList(data=[RunOut.of(r) for r in records], next_cursor=next_cursor)


@router.get(
    "/v1/runs/{run_id}", tags=["runs"], summary="Get a run", responses=error_responses(404, 422)
)
async def get_run(run_id: RunId, engine: EngineDep, principal: PrincipalDep) -> RunOut:
    return RunOut.of(await visible_run(engine, run_id, principal))


@router.get(
    "/v1/runs/{run_id}/events",
    tags=["runs"],
    summary="Stream a run's events (SSE)",
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": "Server-sent events: id = event number, event = type, "
            "data = the event as JSON; ': ping' comments as heartbeats. Ends when the run "
            "is over and every event was sent.",
            "content": {"text/event-stream": {"itemSchema": SSE_EVENT_SCHEMA}},
        },
        **error_responses(404, 422),
    },
)
async def run_events(
    request: Request,
    run_id: RunId,
    engine: EngineDep,
    principal: PrincipalDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_EVENT_ID, description="Send events numbered above this.")
    ] = 0,
    follow: Annotated[
        bool, Query(description="false: send the events stored so far, then close.")
    ] = True,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=r"^[0-9]{1,9}$",
            description="On reconnection: the last event id received (wins over after).",
        ),
    ] = None,
) -> Response:
    """The run's stored events in order, then new ones as they happen (resumable)."""
    resumed = None if last_event_id is None else int(last_event_id)
    await visible_run(engine, run_id, principal)  # 404 before the stream starts
    settings: ServerSettings = request.app.state.settings
    slot = open_stream_slot(request)  # 429 beyond max_streams_per_key
    stream = event_stream(
        engine,
        run_id,
        after=after if resumed is None else resumed,
        heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=settings.poll_seconds,
        max_seconds=settings.max_stream_seconds,
        follow=follow,
        slot=slot,
    )
    return EventStreamResponse(
        stream, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.post(
    "/v1/runs/{run_id}/cancel",
    tags=["runs"],
    summary="Cancel a run",
    responses=error_responses(404, 409, 422),
)
async def cancel_run(run_id: RunId, engine: EngineDep, principal: PrincipalDep) -> RunOut:
    """Stop a run that is not over yet; 409 when it already is."""
    await visible_run(engine, run_id, principal)
    return RunOut.of(await engine.cancel(run_id))


@router.post(
    "/v1/runs/{run_id}/approvals/{call_id}",
    tags=["runs"],
    summary="Approve or reject a pending tool call",
    responses=error_responses(404, 409, 413, 422),
)
async def decide(
    run_id: RunId, call_id: CallId, body: DecisionIn, engine: EngineDep, principal: PrincipalDep
) -> RunOut:
    """Decide a call the run waits on: bound to this run, this call id and these arguments;
    the run's record keeps who decided."""
    await visible_run(engine, run_id, principal)
    record = await engine.decide(
        run_id,
        call_id,
        approve=isinstance(body, ApproveIn),
        arguments=body.arguments if isinstance(body, ApproveIn) else None,
        reason=body.reason,
        principal=principal.name,
    )
    return RunOut.of(record)


@router.get("/v1/agents", tags=["agents"], summary="List the agents", responses=error_responses())
async def list_agents(engine: EngineDep, principal: PrincipalDep) -> AgentList:
    names = visible_agents(engine, principal)
    return AgentList(data=[_agent_info(name, engine.agents[name]) for name in names])


def _agent_info(name: str, agent: Agent[Any, Any]) -> AgentInfo:
    model = agent.model
    if model is not None and not isinstance(model, str):
        model = f"{model.provider}:{model.model_name}"
    system = " ".join((agent.system or "").split())
    tools = [
        ToolInfo(
            name=t.name,
            description=t.description,
            requires_approval=t.requires_approval
            if isinstance(t.requires_approval, bool)
            else "conditional",
            parameters=t.parameters,
        )
        for t in agent.tools.values()
    ]
    return AgentInfo(
        name=name,
        description=system[:200] + ("…" if len(system) > 200 else ""),
        model=model,
        max_steps=agent.max_steps,
        tools=tools,
    )
