"""Bearer keys: every route but /healthz x {no key, wrong key, malformed, valid, another run's id}.

Only 401/403/404 (or a 409 that changes nothing) when not allowed; no run data in any
refusal; keys stored as SHA-256 only and never written to the logs.
"""

from __future__ import annotations

import hashlib
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from figures import figure
from loopwise.errors import UsageError
from loopwise.server import ApiKeys, hash_key, is_loopback, resolve_auth
from server_helpers import KEY, Api, LiveServer, Reply, service, wait_status

WRONG = "wrong-key-0123456789abcdef"


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with service(tmp_path_factory.mktemp("auth"), keys=[KEY], log_level="info") as live:
        yield live


@pytest.fixture(scope="module")
def logs(server: LiveServer) -> Iterator[Captured]:
    """Everything logged while the tests run, the access log included (added after uvicorn
    configured its loggers, which would drop a handler added earlier)."""
    handler = Captured()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    access.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture(scope="module")
def runs(server: LiveServer) -> dict[str, Any]:
    """Two runs of the key's owner: a finished one and one waiting for approval."""
    api = Api(server.url, KEY)
    done = api.post("/v1/runs", {"agent": "counting", "input": "secret-input-1"}).json()
    waiting = api.post("/v1/runs", {"agent": "gated", "input": "secret-input-2"}).json()
    wait_status(api, done["id"], "completed")
    call = wait_status(api, waiting["id"], "input_required")["pending_approvals"][0]["call_id"]
    return {"done": done["id"], "waiting": waiting["id"], "call": call}


def routes(runs: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(method, path, body) for every route, on real run ids."""
    done, waiting, call = runs["done"], runs["waiting"], runs["call"]
    return [
        ("POST", "/v1/runs", {"agent": "counting", "input": "x"}),
        ("GET", "/v1/runs", None),
        ("GET", f"/v1/runs/{done}", None),
        ("GET", f"/v1/runs/{done}/events?follow=false", None),
        ("POST", f"/v1/runs/{waiting}/cancel", None),
        ("POST", f"/v1/runs/{waiting}/approvals/{call}", {"decision": "approve"}),
        ("GET", "/v1/agents", None),
        ("GET", "/openapi.json", None),
        ("GET", "/docs", None),
        ("GET", "/v1/no-such-route", None),
        ("DELETE", f"/v1/runs/{done}", None),
    ]


def leaks(reply: Reply, runs: dict[str, Any]) -> list[str]:
    text = reply.body.decode(errors="replace")
    found = [v for v in (runs["done"], runs["waiting"], "secret-input", "counting") if v in text]
    if reply.status == 401 and set(reply.json()) != {"error"}:
        found.append("body beyond the error")
    return found


def test_auth_matrix(server: LiveServer, runs: dict[str, Any], logs: Captured) -> None:
    cases = {
        "no key": Api(server.url),
        "wrong key": Api(server.url, WRONG),
        "not bearer": Api(server.url, extra={"Authorization": f"Basic {KEY}"}),
        "empty bearer": Api(server.url, extra={"Authorization": "Bearer "}),
    }
    requests = refusals = 0
    found: list[str] = []
    for name, api in cases.items():
        for method, path, body in routes(runs):
            reply = api.request(method, path, body)
            requests += 1
            assert reply.status == 401, (name, method, path, reply.status)
            assert reply.headers["www-authenticate"].startswith("Bearer")
            assert reply.json()["error"]["code"] == "unauthorized"
            refusals += 1
            found += leaks(reply, runs)
    assert found == []
    # Nothing those requests asked for happened.
    valid = Api(server.url, KEY)
    assert wait_status(valid, runs["waiting"], "input_required")
    # Valid key: the run-specific routes on another run's ids.
    other = [
        ("GET", "/v1/runs/run_0000000000000000000000000000dead", 404),
        ("GET", "/v1/runs/run_0000000000000000000000000000dead/events", 404),
        ("POST", "/v1/runs/run_0000000000000000000000000000dead/cancel", 404),
        ("POST", f"/v1/runs/{runs['done']}/approvals/{runs['call']}", 409),  # B's call on A
        ("POST", f"/v1/runs/{runs['waiting']}/approvals/call_of_another_run", 409),
    ]
    for method, path, expected in other:
        body = {"decision": "approve"} if "approvals" in path else None
        reply = valid.request(method, path, body)
        requests += 1
        assert reply.status == expected, (method, path, reply.status)
        assert set(reply.json()) == {"error"}
        found += [v for v in ("secret-input",) if v in reply.body.decode()]
    assert found == []
    assert wait_status(valid, runs["waiting"], "input_required")  # still waiting, unchanged
    # With the key, every route answers.
    for method, path, body in routes(runs)[1:4] + routes(runs)[6:9]:
        assert valid.request(method, path, body).status == 200, path
    assert Api(server.url).get("/healthz").json() == {"status": "ok"}
    n_routes = len(routes(runs))
    figure(
        f"auth matrix: {n_routes} routes x {len(cases)} unauthenticated cases + "
        f"{len(other)} other-run cases = {requests} requests, refusals {refusals}, "
        f"leaks {len(found)}"
    )
    joined = "\n".join(logs.lines)
    assert "GET /v1/runs" in joined or "POST /v1/runs" in joined  # the access log was captured
    assert KEY not in joined and WRONG not in joined


def test_keys_are_checked_by_hash_in_constant_time() -> None:
    keys = ApiKeys.of(["k" * 20, "other-key-0123456789"])
    assert keys.hashes[0] == hashlib.sha256(b"k" * 20).hexdigest()
    assert "k" * 20 not in repr(keys)
    assert keys.check("k" * 20) and keys.check("other-key-0123456789")
    assert not keys.check("k" * 19) and not keys.check("") and not keys.check("K" * 20)
    assert not ApiKeys().check("anything")


def test_configured_keys_are_required_wherever_it_binds(tmp_path: Path) -> None:
    setup = resolve_auth(["configured-key-0123456789"], host="127.0.0.1", data_dir=tmp_path)
    assert setup.require_auth and setup.generated_key is None
    assert setup.keys.check("configured-key-0123456789")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="too short"):
        resolve_auth(["short"], host="0.0.0.0", data_dir=tmp_path)


def test_loopback_without_keys_needs_the_local_users_key(tmp_path: Path) -> None:
    """Loopback is not one user: the default key is kept for this user only (mode 0600)."""
    first = resolve_auth([], host="127.0.0.1", data_dir=tmp_path)
    assert first.require_auth and first.local and first.generated_key is None
    assert first.key_file == tmp_path / "local_api_key"
    key = first.key_file.read_text().strip()
    assert first.keys.check(key) and len(key) >= 40
    assert stat.S_IMODE(first.key_file.stat().st_mode) == 0o600
    principal = first.keys.identify(key)
    assert principal is not None and principal.admin
    for host in ("localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
        again = resolve_auth([], host=host, data_dir=tmp_path)
        assert again.require_auth and again.keys.check(key)  # the same key, made once
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        assert not is_loopback(host)


def test_no_auth_is_loopback_only_and_alone(tmp_path: Path) -> None:
    setup = resolve_auth([], host="127.0.0.1", data_dir=tmp_path, no_auth=True)
    assert not setup.require_auth and list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="loopback only"):
        resolve_auth([], host="0.0.0.0", data_dir=tmp_path, no_auth=True)
    with pytest.raises(UsageError, match="cannot go with"):
        resolve_auth(["a-key-0123456789abcdef"], host="::1", data_dir=tmp_path, no_auth=True)


def test_beyond_loopback_a_key_is_generated_once_and_stored_hashed(tmp_path: Path) -> None:
    first = resolve_auth([], host="0.0.0.0", data_dir=tmp_path)
    assert first.require_auth and first.generated_key is not None
    key = first.generated_key
    assert len(key) >= 40 and first.keys.check(key)
    assert first.key_file == tmp_path / "api_keys"
    stored = first.key_file.read_text()
    assert stored.strip() == hash_key(key) and key not in stored
    assert stat.S_IMODE(first.key_file.stat().st_mode) == 0o600

    again = resolve_auth([], host="0.0.0.0", data_dir=tmp_path)
    assert again.generated_key is None and again.require_auth
    assert again.keys.check(key) and again.key_file == first.key_file
