"""A small client of the loopwise HTTP API for the CLI (stdlib only: urllib).

``ApiClient.request`` returns the decoded JSON or raises :class:`ApiError` with the
server's one-sentence message; ``ApiClient.events`` follows a run's server-sent events,
reconnecting with ``Last-Event-ID`` when the connection drops. Without a key given, a
loopback URL is sent the key ``loopwise serve`` keeps for this user in
``<data dir>/local_api_key``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_URL", "ApiClient", "ApiError", "SseEvent"]

DEFAULT_URL = "http://127.0.0.1:8000"
_RECONNECTS = 5


class ApiError(Exception):
    """The server said no (``status`` ≥ 400), or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SseEvent:
    seq: int
    type: str
    data: dict[str, Any]


class ApiClient:
    """Talks to ``url`` (``LOOPWISE_URL``), with ``api_key`` (``LOOPWISE_API_KEY``) if any."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30):
        self.url = (url or os.environ.get("LOOPWISE_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("LOOPWISE_API_KEY") or _local_key(self.url)
        self.timeout = timeout

    def _request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> urllib.request.Request:
        hdrs = {"Accept": "application/json", **(headers or {})}
        if self.api_key:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
        if body is not None or method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Type"] = "application/json"  # a keyless server insists on it
        return urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)

    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """Send one request; the decoded JSON answer, or :class:`ApiError`."""
        params = {k: v for k, v in query.items() if v is not None}
        if params:
            path += "?" + urllib.parse.urlencode(params)
        req = self._request(method, path, body)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raise _api_error(err) from None
        except (urllib.error.URLError, OSError) as err:
            raise self._unreachable(err) from None

    def _unreachable(self, err: Exception) -> ApiError:
        reason = getattr(err, "reason", err)
        return ApiError(
            0,
            "unreachable",
            f"Cannot reach the loopwise server at {self.url} ({reason}); is `loopwise serve` "
            "running there? Set --url or LOOPWISE_URL.",
        )

    def events(self, run_id: str, *, after: int = 0, follow: bool = True) -> Iterator[SseEvent]:
        """The run's events after ``after``; with ``follow``, until the run is over."""
        path = f"/v1/runs/{urllib.parse.quote(run_id, safe='')}/events"
        if not follow:
            path += "?follow=false"
        failures = 0
        while True:
            try:
                for event in self._stream(path, after):
                    after = event.seq
                    failures = 0
                    yield event
                return
            except urllib.error.HTTPError as err:
                raise _api_error(err) from None
            except (urllib.error.URLError, OSError) as err:
                failures += 1
                if failures > _RECONNECTS:
                    raise self._unreachable(err) from None
                time.sleep(0.5 * failures)  # the server may be restarting

    def _stream(self, path: str, after: int) -> Iterator[SseEvent]:
        req = self._request(
            "GET", path, headers={"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        )
        with urllib.request.urlopen(req, timeout=max(self.timeout, 120)) as resp:
            fields: dict[str, str] = {}
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "id" in fields and "data" in fields:
                    yield SseEvent(
                        int(fields["id"]), fields.get("event", ""), json.loads(fields["data"])
                    )
                fields = {}


def _local_key(url: str) -> str | None:
    """The key ``loopwise serve`` keeps for this user, if ``url`` is on loopback."""
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    if not local:
        return None
    from ..datadir import data_dir

    try:
        key = (data_dir() / "local_api_key").read_text().strip()
    except OSError:
        return None
    return key or None


def _api_error(err: urllib.error.HTTPError) -> ApiError:
    """The server's error body (``{"error": {"code", "message"}}``) as an ApiError."""
    try:
        detail = json.loads(err.read())["error"]
        return ApiError(err.code, str(detail["code"]), str(detail["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(err.code, "http_error", f"The server answered {err.code} {err.reason}.")
