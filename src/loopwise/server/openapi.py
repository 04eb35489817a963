"""The OpenAPI document: FastAPI's, made exact where FastAPI cannot say it alone.

The registered agents' names become an enum (for ``/v1/memories``, those with a memory);
error responses are JSON whatever the route's success type; an absent optional parameter
is not ``null``; the event stream is described event by event (``itemSchema``); bearer
security is declared when required.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .schemas import ErrorBody

__all__ = ["SSE_EVENT_SCHEMA", "error_responses", "openapi"]

SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event: id is the event number, event its type, data the "
    "event as JSON (see loopwise.events).",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer", "minimum": 0},
    },
}

_DESCRIPTIONS = {
    401: "No API key, or not a valid one.",
    404: "No such run, agent or route.",
    409: "The run's state does not allow this.",
    413: "The request body is too large.",
    422: "The request is not valid.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error responses a route may give (all in the error shape)."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in (401, *statuses)}


def openapi(
    app: FastAPI,
    agents: list[str],
    *,
    secured: bool,
    open_paths: Collection[str],
    memory_agents: Collection[str] = (),
) -> dict[str, Any]:
    """FastAPI's schema, with the agents' names (those with a memory for ``/v1/memories``)
    and the bearer scheme (on all but /healthz)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    if agents:
        run_create = schema["components"]["schemas"]["RunCreate"]
        run_create["properties"]["agent"]["enum"] = agents
    for operation in (op for item in schema["paths"].values() for op in item.values()):
        _tidy(operation)
    if memory_agents:
        for path, item in schema["paths"].items():
            for operation in item.values() if path.startswith("/v1/memories") else ():
                for parameter in operation.get("parameters", []):
                    if parameter["name"] == "agent" and parameter["in"] == "query":
                        parameter["schema"]["enum"] = sorted(memory_agents)
    if secured:
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
        for path in open_paths:
            for operation in schema["paths"].get(path, {}).values():
                operation["security"] = []
    app.openapi_schema = schema
    return schema


def _tidy(operation: dict[str, Any]) -> None:
    """Errors are JSON whatever the route's success type; an absent parameter is not null."""
    for status, response in operation.get("responses", {}).items():
        content = response.get("content", {})
        if status.startswith("4"):
            response["content"] = {"application/json": next(iter(content.values()))}
        elif "text/event-stream" in content:  # each event is described by itemSchema
            content["text/event-stream"].pop("schema", None)
    for parameter in operation.get("parameters", []):
        variants = parameter["schema"].get("anyOf", [])
        if len(variants) == 2 and {"type": "null"} in variants:
            schema = parameter["schema"]
            del schema["anyOf"]
            schema.update(next(v for v in variants if v != {"type": "null"}))
