"""The web console: static HTML/CSS/JS at ``/`` and ``/console/*``, a client of the API.

The page holds no run data itself: its script calls the ``/v1`` API from the browser with
the API key the user types in (kept in ``sessionStorage``), reads the event stream with
``fetch`` (so the key travels in the ``Authorization`` header, never in a URL), and writes
every text from a run with ``textContent``. The files are package data, served with a
strict Content-Security-Policy (scripts and styles from this origin only, no inline script,
no connections elsewhere), so a run's text cannot run script even if a bug wrote it as HTML.

``mount_console(app)`` places the file server inside the Host check and before the bearer
check: the static files hold no secrets, and a browser cannot send a bearer key when it
opens a page.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CONSOLE_PATHS", "CSP", "SWAGGER_FILES", "ConsoleFiles", "mount_console"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_FILES = ("index.html", "console.js", "console.css")
SWAGGER_FILES = {
    "/console/swagger/swagger-ui-bundle.js": "swagger-ui-bundle.js",
    "/console/swagger/swagger-ui.css": "swagger-ui.css",
}
"""Swagger UI's files, from the ``fastapi-offline`` package when it is installed."""
CONSOLE_PATHS = frozenset({"/", "/console", *(f"/console/{name}" for name in _FILES)})


def _load() -> dict[str, tuple[bytes, str]]:
    """The console's files by URL path, read once from the package."""
    folder = resources.files("loopwise.server") / "console_static"
    files: dict[str, tuple[bytes, str]] = {}
    for name in _FILES:
        body = (folder / name).read_bytes()
        files[f"/console/{name}"] = (body, _TYPES[name[name.rindex(".") :]])
    files["/"] = files["/console"] = files["/console/index.html"]
    swagger = _swagger_folder()
    for path, name in SWAGGER_FILES.items() if swagger is not None else ():
        files[path] = ((swagger / name).read_bytes(), _TYPES[name[name.rindex(".") :]])
    return files


def _swagger_folder() -> Any:
    """Swagger UI 5's files in the ``fastapi-offline`` package (MIT; it bundles Swagger UI,
    Apache-2.0), or None without it. Only its files are used, not its code."""
    try:
        folder = resources.files("fastapi_offline") / "static"
    except ModuleNotFoundError:
        return None
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


class ConsoleFiles:
    """ASGI middleware: answers GET/HEAD of the console's own paths; passes on the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.files = _load()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.files.get(scope.get("path", "")) if scope["type"] == "http" else None
        if found is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        body, media_type = found
        headers = [
            (b"content-type", media_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cache-control", b"no-cache"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )


def mount_console(app: FastAPI, **_: Any) -> None:
    """Serve the console at ``/`` and ``/console/*`` and the AG-UI stream on ``app``.

    Call it after :func:`loopwise.server.create_app` (before the first request): the file
    server goes just inside the Host check, ahead of the bearer-key check."""
    from .agui import agui_router
    from .hosts import HostGuard

    app.include_router(agui_router)
    if hasattr(app.state, "routes"):
        app.state.routes = [*app.state.routes, *agui_router.routes]
    index = next(
        (i + 1 for i, m in enumerate(app.user_middleware) if m.cls == HostGuard),  # type: ignore[comparison-overlap]
        0,
    )
    app.user_middleware.insert(index, Middleware(ConsoleFiles))
    _offline_docs(app)


def _offline_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI's files from this server (FastAPI's loads them from a CDN,
    blank offline); without ``swagger-ui-bundle``, a page that links the OpenAPI document."""
    url, spec = app.docs_url, app.openapi_url or "/openapi.json"
    if url is None:
        return
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != url]
    local = _swagger_folder() is not None

    async def docs() -> HTMLResponse:
        if not local:
            return HTMLResponse(
                "<!doctype html><title>loopwise API</title><p>The API is described in "
                f'<a href="{spec}">{spec}</a> (install fastapi-offline for '
                "an interactive Swagger UI page).</p>"
            )
        return get_swagger_ui_html(
            openapi_url=spec,
            title=f"{app.title} API",
            swagger_js_url="/console/swagger/swagger-ui-bundle.js",
            swagger_css_url="/console/swagger/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    app.add_api_route(url, docs, methods=["GET"], include_in_schema=False)
