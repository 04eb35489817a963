"""The HTTP API for real: uvicorn on loopback, the durable engine on SQLite, urllib as client."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import subprocess
import sys
import tracemalloc
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from figures import figure
from server_helpers import KEY, Api, Frame, LiveServer, service, wait_status

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with service(tmp_path_factory.mktemp("server"), keys=[KEY]) as live:
        yield live


@pytest.fixture
def api(server: LiveServer) -> Api:
    return Api(server.url, KEY)


def submit(api: Api, agent: str, **fields: Any) -> dict[str, Any]:
    reply = api.post("/v1/runs", {"agent": agent, "input": "do it", **fields})
    assert reply.status == 202, reply.body
    run: dict[str, Any] = reply.json()
    return run


def until_event(api: Api, run_id: str, kind: str) -> list[Frame]:
    """Frames up to and including the first event of type ``kind`` (then disconnects)."""
    seen: list[Frame] = []
    for frame in api.sse(f"/v1/runs/{run_id}/events"):
        if frame.id is not None:
            seen.append(frame)
            if frame.event == kind:
                return seen
    raise AssertionError(f"the stream ended without a {kind} event")


def pending_call(api: Api, run_id: str) -> dict[str, Any]:
    until_event(api, run_id, "approval_requested")
    run = wait_status(api, run_id, "input_required")
    [pending] = run["pending_approvals"]
    return dict(pending)


def assert_error(reply: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body[:300])
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"].endswith("."), body
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


# -- lifecycle ----------------------------------------------------------------------------


def test_submit_stream_and_get_a_completed_run(api: Api) -> None:
    reply = api.post("/v1/runs", {"agent": "counting", "input": "count", "metadata": {"k": 1}})
    assert reply.status == 202
    run = reply.json()
    assert run["status"] == "queued" and run["id"].startswith("run_")
    assert reply.headers["location"] == f"/v1/runs/{run['id']}"
    assert run["metadata"] == {"k": 1}

    frames = api.events(run["id"])
    ids = [int(f.id) for f in frames if f.id]
    assert ids == list(range(1, len(ids) + 1))
    assert frames[0].event == "run_started" and frames[-1].event == "run_finished"
    assert all(f.data["type"] == f.event for f in frames)
    assert frames[-1].data["status"] == "completed"
    assert [f.data["name"] for f in frames if f.event == "tool_call"] == ["add"] * 3

    done = api.get(f"/v1/runs/{run['id']}").json()
    assert done["status"] == "completed"
    assert done["output"] == "The total is 3."
    assert (done["steps"], done["tool_calls"]) == (4, 3)
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0
    assert done["pending_approvals"] == [] and done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]


def test_idempotency_key_gives_back_the_same_run(api: Api) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/v1/runs", {"agent": "counting", "input": "a"}, headers=headers).json()
    again = api.post("/v1/runs", {"agent": "counting", "input": "a"}, headers=headers)
    assert again.status == 202 and again.json()["id"] == first["id"]
    other = api.post(
        "/v1/runs", {"agent": "counting", "input": "a"}, headers={"Idempotency-Key": "x"}
    )
    assert other.json()["id"] != first["id"]

    def post(_: int) -> str:
        reply = api.post(
            "/v1/runs", {"agent": "counting", "input": "b"}, headers={"Idempotency-Key": "burst"}
        )
        assert reply.status == 202, reply.body
        return str(reply.json()["id"])

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(post, range(20)))
    assert len(ids) == 1
    figure(f"idempotency over HTTP: 20 concurrent POSTs with one key, runs created = {len(ids)}")


def test_approval_resumes_the_run_with_edited_arguments(api: Api) -> None:
    run = submit(api, "gated")
    pending = pending_call(api, run["id"])
    assert pending["tool"] == "delete_file"
    assert pending["arguments"] == {"path": "notes.txt"}
    path = f"/v1/runs/{run['id']}/approvals/{pending['call_id']}"

    assert_error(api.post(f"/v1/runs/{run['id']}/approvals/other", {"decision": "approve"}), 409)
    bad = api.post(path, {"decision": "approve", "arguments": {"path": 3}})
    assert "path" in assert_error(bad, 422, "invalid_arguments")["message"]
    assert_error(api.post(path, {"decision": "maybe"}), 422, "invalid_request")
    assert_error(api.post(path, {"decision": "reject", "arguments": {}}), 422)
    assert_error(
        api.post(f"/v1/runs/run_nope/approvals/{pending['call_id']}", {"decision": "approve"}), 404
    )
    assert wait_status(api, run["id"], "input_required")  # none of that touched the run

    reply = api.post(path, {"decision": "approve", "arguments": {"path": "draft.txt"}})
    assert reply.status == 200 and reply.json()["id"] == run["id"]
    assert reply.json()["status"] in ("queued", "in_progress", "completed")
    frames = api.events(run["id"])
    results = [f.data["content"] for f in frames if f.event == "tool_result"]
    assert results == ["deleted draft.txt"]
    done = wait_status(api, run["id"], "completed")
    assert done["output"] == "Result: deleted draft.txt"
    assert_error(api.post(path, {"decision": "approve"}), 409, "conflict")


def test_rejection_keeps_the_tool_from_running(api: Api) -> None:
    run = submit(api, "gated")
    pending = pending_call(api, run["id"])
    path = f"/v1/runs/{run['id']}/approvals/{pending['call_id']}"
    reply = api.post(path, {"decision": "reject", "reason": "not that file"})
    assert reply.status == 200
    api.events(run["id"])
    done = wait_status(api, run["id"], "completed")
    assert "deleted" not in done["output"]
    assert "not that file" in done["output"]


def test_list_filters_and_pages_with_a_cursor(api: Api) -> None:
    made = {submit(api, "counting", metadata={"batch": "list"})["id"] for _ in range(5)}
    for run_id in made:
        wait_status(api, run_id, "completed")
    seen: list[str] = []
    cursor = None
    while True:
        query = {"agent": "counting", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/runs?" + urllib.parse.urlencode(query)).json()
        assert len(page["data"]) <= 2
        assert all(r["agent"] == "counting" for r in page["data"])
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and made <= set(seen)
    created = [api.get(f"/v1/runs/{i}").json()["created_at"] for i in seen]
    assert created == sorted(created, reverse=True)

    completed = api.get("/v1/runs?status=completed&limit=200").json()["data"]
    assert made <= {r["id"] for r in completed}
    assert {r["status"] for r in completed} == {"completed"}
    assert api.get("/v1/runs?agent=nobody").json() == {"data": [], "next_cursor": None}
    assert_error(api.get("/v1/runs?status=done"), 422, "invalid_request")
    assert_error(api.get("/v1/runs?limit=0"), 422)
    assert_error(api.get("/v1/runs?limit=201"), 422)
    assert_error(api.get("/v1/runs?cursor=not-a-cursor"), 404)


def test_cancel(api: Api) -> None:
    run = submit(api, "slow")
    until_event(api, run["id"], "tool_call")
    reply = api.post(f"/v1/runs/{run['id']}/cancel")
    assert reply.status == 200 and reply.json()["status"] == "cancelled"
    frames = api.events(run["id"])  # the stream ends: the run is over
    assert frames[-1].event == "run_finished" and frames[-1].data["status"] == "cancelled"
    assert_error(api.post(f"/v1/runs/{run['id']}/cancel"), 409, "conflict")
    assert_error(api.post("/v1/runs/run_nope/cancel"), 404, "not_found")


def test_agents_are_listed_with_their_tools(api: Api) -> None:
    agents = {a["name"]: a for a in api.get("/v1/agents").json()["data"]}
    assert set(agents) == {"counting", "gated", "slow"}
    gated = agents["gated"]
    assert gated["description"] == "Delete files carefully."
    assert gated["model"] == "test:function"
    [tool] = gated["tools"]
    assert tool["name"] == "delete_file" and tool["requires_approval"] is True
    assert tool["parameters"]["properties"] == {"path": {"type": "string"}}


def test_unknown_agent_and_run(api: Api) -> None:
    assert_error(api.post("/v1/runs", {"agent": "ghost", "input": "x"}), 404, "not_found")
    assert_error(api.get("/v1/runs/run_nope"), 404, "not_found")
    assert_error(api.get("/v1/runs/run_nope/events"), 404, "not_found")


def test_openapi_is_published(api: Api) -> None:
    schema = api.get("/openapi.json").json()
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/events", "/v1/agents"} <= set(
        schema["paths"]
    )
    agent = schema["components"]["schemas"]["RunCreate"]["properties"]["agent"]
    assert agent["enum"] == ["counting", "gated", "slow"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    docs = api.get("/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()


# -- server-sent events -------------------------------------------------------------------


def test_reconnecting_with_last_event_id_replays_exactly_what_was_missed(api: Api) -> None:
    run = submit(api, "gated")
    before = until_event(api, run["id"], "approval_requested")  # then the connection drops
    last = before[-1].id
    assert last is not None
    pending = wait_status(api, run["id"], "input_required")["pending_approvals"][0]
    api.post(f"/v1/runs/{run['id']}/approvals/{pending['call_id']}", {"decision": "approve"})

    after = api.events(run["id"], headers={"Last-Event-ID": last})
    everything = api.events(run["id"])
    assert [f.id for f in before + after] == [f.id for f in everything]
    assert [f.data for f in before + after] == [f.data for f in everything]
    assert after[0].id == str(int(last) + 1) and after[-1].event == "run_finished"

    by_query = api.events(run["id"], f"?after={last}")
    assert [f.id for f in by_query] == [f.id for f in after]
    header_wins = api.events(run["id"], "?after=1", headers={"Last-Event-ID": last})
    assert [f.id for f in header_wins] == [f.id for f in after]
    assert api.events(run["id"], headers={"Last-Event-ID": everything[-1].id or ""}) == []
    assert_error(api.get(f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": "x"}), 422)


def test_heartbeats_while_waiting_and_the_stream_closes_at_the_end(api: Api) -> None:
    run = submit(api, "gated")
    pings = 0
    frames: list[Frame] = []
    decided = False
    for frame in api.sse(f"/v1/runs/{run['id']}/events"):
        if frame.comment == "ping":
            pings += 1
        elif frame.id is not None:
            frames.append(frame)
        if pings >= 2 and not decided:
            pending = wait_status(api, run["id"], "input_required")["pending_approvals"][0]
            reply = api.post(
                f"/v1/runs/{run['id']}/approvals/{pending['call_id']}", {"decision": "approve"}
            )
            assert reply.status == 200
            decided = True
    assert decided and pings >= 2
    ids = [int(f.id or 0) for f in frames]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert frames[-1].event == "run_finished" and frames[-1].data["status"] == "completed"


def test_follow_false_sends_what_is_stored_and_closes(api: Api) -> None:
    run = submit(api, "gated")
    until_event(api, run["id"], "approval_requested")
    wait_status(api, run["id"], "input_required")
    frames = api.events(run["id"], "?follow=false", timeout=10)
    assert frames and frames[-1].event in ("approval_requested", "run_finished")
    api.post(f"/v1/runs/{run['id']}/cancel")


# -- hostile input --------------------------------------------------------------------------


def _raw_post(server: LiveServer, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """POST with http.client: lets a test send chunked bodies or lie in Content-Length."""
    parsed = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=30)
    try:
        chunked = headers.pop("Transfer-Encoding", None) == "chunked"
        conn.putrequest("POST", path)
        for name, value in {"Authorization": f"Bearer {KEY}", **headers}.items():
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        if chunked:
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.send(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_oversized_bodies_are_refused_while_reading(server: LiveServer, api: Api) -> None:
    big = json.dumps({"agent": "counting", "input": "x" * (2 << 20)}).encode()
    tracemalloc.start()  # traces every thread: the server's included
    try:
        refused = 0
        for _ in range(20):
            assert_error(api.post("/v1/runs", raw=big), 413, "payload_too_large")
            headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
            status, body = _raw_post(server, "/v1/runs", big, headers)
            assert status == 413 and body["error"]["code"] == "payload_too_large"
            refused += 2
        peak_mb = tracemalloc.get_traced_memory()[1] / (1 << 20)
    finally:
        tracemalloc.stop()
    # Content-Length understating the body: only the declared bytes are read.
    status, body = _raw_post(server, "/v1/runs", big[: 1 << 20], {"Content-Length": "10"})
    assert status == 422 and body["error"]["code"] == "invalid_request"
    figure(
        f"oversized bodies: {refused} x 2 MiB refused with 413 (declared length and chunked), "
        f"peak memory allocated meanwhile {peak_mb:.1f} MiB"
    )
    assert peak_mb < 16


def test_deep_huge_and_malformed_json_get_clean_4xx(api: Api) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert_error(api.post("/v1/runs", raw=deep), 422, "invalid_json")
    assert_error(api.post("/v1/runs", raw=b'{"agent": "counting", "input": '), 422)
    assert_error(api.post("/v1/runs", raw=b"\xff\xfe not utf-8"), 422)
    assert_error(api.post("/v1/runs", {"agent": "counting", "input": "x" * 25_001}), 422)
    assert_error(api.post("/v1/runs", {"agent": "counting", "input": "   "}), 422)
    assert_error(api.post("/v1/runs", {"agent": "counting", "input": "x", "extra": 1}), 422)
    too_many = {f"k{i}": i for i in range(11)}
    assert_error(
        api.post("/v1/runs", {"agent": "counting", "input": "x", "metadata": too_many}), 422
    )
    nested: Any = "leaf"
    for _ in range(40):
        nested = {"a": nested}
    decision = {"decision": "approve", "arguments": {"path": nested}}
    error = assert_error(api.post("/v1/runs/run_x/approvals/c", decision), 422)
    assert "deeper" in error["message"]
    nan = b'{"agent": "counting", "input": "x", "budget": {"max_usd": NaN}}'
    assert_error(api.post("/v1/runs", raw=nan), 422)
    assert_error(api.post("/v1/runs", {"agent": "counting", "input": "x", "model": "gpt"}), 422)
    # NUL reaches no database (PostgreSQL refuses it in text columns).
    nul = assert_error(api.post("/v1/runs", {"agent": "counting", "input": "a\u0000b"}), 422)
    assert "NUL" in nul["message"]
    for path in ("/v1/runs/run%00", "/v1/runs?agent=%00", "/v1/runs/r/events?after=1000000000"):
        assert_error(api.get(path), 422)
    assert_error(api.get("/v1/runs/r/events", headers={"Last-Event-ID": "9" * 10}), 422)
    assert_error(
        api.post(
            "/v1/runs", {"agent": "counting", "input": "x", "budget": {"max_tool_calls": True}}
        ),
        422,
    )


def test_unknown_routes_and_methods(api: Api) -> None:
    assert_error(api.get("/v2/anything"), 404, "not_found")
    reply = api.request("DELETE", "/v1/runs")
    assert_error(reply, 405, "method_not_allowed")
    assert set(reply.headers["allow"].split(", ")) >= {"GET", "POST"}
    assert api.get("/healthz").json() == {"status": "ok"}


def test_input_limit_matches_the_engine(api: Api) -> None:
    """25,000 characters of 4-byte UTF-8 is the engine's 100,000-byte limit exactly."""
    run = submit(api, "counting", input="😀" * 25_000)
    assert wait_status(api, run["id"], "completed")["input"] == "😀" * 25_000


def test_importing_loopwise_or_its_cli_loads_no_server_code() -> None:
    code = (
        "import sys, loopwise, loopwise.cli.main\n"
        "heavy = {'fastapi', 'uvicorn', 'starlette', 'dbos', 'sqlalchemy'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
