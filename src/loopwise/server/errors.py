"""Every error the API sends has one shape: ``{"error": {"code", "message"}}``.

Handlers turn FastAPI's validation errors, Starlette's 404/405, the engine's
:class:`NotFound`/:class:`Conflict`/:class:`InvalidArguments` and anything unexpected into
it; :class:`BodyLimit` refuses bodies over the limit while reading them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..durable.records import Conflict, IdempotencyMismatch, InvalidArguments, NotFound
from ..errors import UsageError

__all__ = ["ApiError", "BodyLimit", "error_response", "install_error_handlers"]

logger = logging.getLogger("loopwise.server")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


class ApiError(Exception):
    """An error to answer with: status, code and a one-sentence message."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] = {}):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


_PATTERN_HINTS = {
    "input": "must contain some text that is not whitespace, and no NUL characters",
    "model": "must be provider:model with a provider loopwise knows, e.g. openai:gpt-4.1",
    "Last-Event-ID": "must be the number of an event",
    "cursor": "must be the next_cursor of a listing",
    "Idempotency-Key": "must be 1 to 200 printable ASCII characters without spaces",
}
_TYPE_TAG = re.compile(r"^(constrained-\w+|function-\w+\[.*\]|str|int|float|bool|none)$")
"""Parts of a pydantic error location that name a union member, not a field."""


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "?", "!")) else text + "."


def _validation_message(errors: Sequence[Any]) -> str:
    """One sentence from pydantic's list of errors: the first, and how many more."""
    if not errors:
        return "The request is not valid."
    first = errors[0]
    if first.get("type") == "json_invalid":
        error = first.get("ctx", {}).get("error", "malformed")
        return f"The request body is not valid JSON: {error}."
    parts = [str(p) for p in first.get("loc", ()) if p != "body" and not _TYPE_TAG.match(str(p))]
    where = ".".join(parts) or "body"
    message = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    if first.get("type") == "string_pattern_mismatch":
        message = _PATTERN_HINTS.get(parts[-1] if parts else "", "has a form that is not allowed")
    more = len(errors) - 1
    extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return _sentence(f"Invalid {where}: {message}{extra}")


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", _validation_message(exc.errors()))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = _CODES.get(status, "error")
    headers = dict(exc.headers or {})
    if status == 404:
        message = f"There is no {request.url.path}; see /docs for the routes of this API."
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
        headers["Allow"] = ", ".join(_allowed(request))
    elif status == 400:  # FastAPI could not parse the body (bad UTF-8, nested too deeply)
        status, code = 422, "invalid_json"
        message = "The request body could not be read as JSON (malformed or nested too deeply)."
    else:
        message = _sentence(str(exc.detail))
    return error_response(status, code, message, headers)


def _allowed(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.state.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _on_engine_error(request: Request, exc: Exception) -> Response:
    message = _sentence(str(exc))
    if isinstance(exc, NotFound):
        return error_response(404, "not_found", message)
    if isinstance(exc, Conflict):
        return error_response(409, "conflict", message)
    if isinstance(exc, IdempotencyMismatch):
        return error_response(422, "idempotency_key_reused", message)
    return error_response(422, "invalid_arguments", message)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, "internal_error", "The server failed on this request; its log says why."
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(ApiError, _on_api_error)
    for kind in (NotFound, Conflict, InvalidArguments, UsageError):
        app.add_exception_handler(kind, _on_engine_error)
    app.add_exception_handler(Exception, _on_unexpected)


class BodyLimit:
    """Reads a request body whole before the app sees it, answering 413 past ``max_bytes``.

    The limit is enforced on the bytes as they arrive (a lying or missing Content-Length
    does not help); a declared length over the limit is refused before reading.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, more=True)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, more=more)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, *, more: bool) -> None:
        """413. The rest of the body is read and dropped (up to 8x the limit) first, so that
        a client still sending gets the answer instead of a reset connection."""
        if more:
            await _drain(receive, 8 * self.max_bytes)
        response = error_response(
            413,
            "payload_too_large",
            f"The request body is larger than the limit of {self.max_bytes} bytes.",
            {"Connection": "close"},
        )
        await response(scope, receive, send)


async def _drain(receive: Receive, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))
