"""``/v1/memories``: an agent's long-term memories over HTTP (list, search, get, delete).

Every route is scoped to one namespace: ``agent`` (a registered agent with a memory that
the caller may use) and optional ``key`` (the ``memory_key`` of its runs' metadata), which
selects within the caller's own namespace (:meth:`Principal.memory_key`: an admin's key is
used as given). A memory of another namespace is a 404, as if it did not exist. The store
is the agent's own :class:`~loopwise.memory.Memory`, so the API reads what the workers
write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel

from ..errors import UsageError
from .errors import ApiError
from .openapi import error_responses
from .principals import LOCAL, Principal
from .schemas import NO_NUL, ErrorBody

if TYPE_CHECKING:
    from ..memory import Memory, Namespace

__all__ = ["memory_router"]

memory_router = APIRouter(prefix="/v1/memories", tags=["memories"])

AgentQuery = Annotated[
    str, Query(min_length=1, max_length=200, pattern=NO_NUL, description="The agent.")
]
KeyQuery = Annotated[
    str,
    Query(
        max_length=100,
        pattern=r"^[^\x00]*$",
        description="Memory key within your namespace ('' = your namespace itself).",
    ),
]
MemoryId = Annotated[str, Path(max_length=200, pattern=NO_NUL, description="The memory's id.")]
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The memory's embedder or store is unavailable."}
}


class MemoryList(BaseModel):
    data: list[dict[str, Any]]
    next_offset: int | None


class HitList(BaseModel):
    data: list[dict[str, Any]]


def _scope(request: Request, agent: str, key: str) -> tuple[Memory, Namespace]:
    from ..memory import Namespace

    principal = getattr(request.state, "principal", None)
    principal = principal if isinstance(principal, Principal) else LOCAL
    found = request.app.state.engine.agents.get(agent)
    if found is None or not principal.may_use(agent):
        raise ApiError(404, "not_found", f"No agent is named {agent!r}.")
    memory = getattr(found, "memory", None)
    if memory is None:
        raise ApiError(404, "not_found", f"Agent {agent!r} has no long-term memory.")
    return memory, Namespace(agent, principal.memory_key(key))


async def _guard(work: Any) -> Any:
    try:
        return await work
    except UsageError as exc:
        raise ApiError(503, "unavailable", " ".join(str(exc).split())) from None


@memory_router.get(
    "", summary="List memories", responses={**error_responses(404, 422), **UNAVAILABLE}
)
async def list_memories(
    request: Request,
    agent: AgentQuery,
    key: KeyQuery = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> MemoryList:
    """One namespace's memories, newest first, a page at a time."""
    memory, namespace = _scope(request, agent, key)
    records = await _guard(memory.list(namespace, limit=limit + 1, offset=offset))
    more = len(records) > limit
    return MemoryList(
        data=[r.to_dict() for r in records[:limit]], next_offset=offset + limit if more else None
    )


@memory_router.get(
    "/search", summary="Search memories", responses={**error_responses(404, 422), **UNAVAILABLE}
)
async def search_memories(
    request: Request,
    agent: AgentQuery,
    q: Annotated[str, Query(min_length=1, max_length=2000, pattern=r"^[^\x00]*\S[^\x00]*$")],
    key: KeyQuery = "",
    k: Annotated[int, Query(ge=1, le=50)] = 5,
    threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
) -> HitList:
    """The namespace's memories most relevant to ``q`` (vector + keyword + recency)."""
    memory, namespace = _scope(request, agent, key)
    hits = await _guard(memory.recall(q, namespace=namespace, k=k, threshold=threshold))
    return HitList(data=[h.to_dict() for h in hits])


@memory_router.get(
    "/{memory_id}", summary="Get a memory", responses={**error_responses(404, 422), **UNAVAILABLE}
)
async def get_memory(
    request: Request, memory_id: MemoryId, agent: AgentQuery, key: KeyQuery = ""
) -> dict[str, Any]:
    memory, namespace = _scope(request, agent, key)
    record = await _guard(memory.get(memory_id, namespace))
    if record is None:
        raise ApiError(404, "not_found", f"No memory {memory_id!r} in this namespace.")
    return record.to_dict()  # type: ignore[no-any-return]


@memory_router.delete(
    "/{memory_id}",
    status_code=204,
    summary="Delete a memory",
    responses={**error_responses(404, 422), **UNAVAILABLE},
)
async def delete_memory(
    request: Request, memory_id: MemoryId, agent: AgentQuery, key: KeyQuery = ""
) -> Response:
    """Delete the memory everywhere it is stored (row, keyword index, vector index)."""
    memory, namespace = _scope(request, agent, key)
    if not await _guard(memory.forget(memory_id, namespace)):
        raise ApiError(404, "not_found", f"No memory {memory_id!r} in this namespace.")
    return Response(status_code=204)
