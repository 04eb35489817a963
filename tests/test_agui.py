"""The AG-UI 1.0 stream of a run, for real: each event validated by ``ag-ui-protocol``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from console_support import HOSTILE, console_service
from figures import figure
from loopwise.durable.records import StoredEvent
from loopwise.server.agui import AguiTranslator
from server_helpers import KEY, Api, LiveServer, wait_status

pytestmark = pytest.mark.timeout(120)
MALLORY = "mallory-key-0123456789abcdef"
ag_ui = pytest.importorskip("ag_ui.core", reason="ag-ui-protocol is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    keys = [KEY, f"mallory:{MALLORY}"]
    with console_service(tmp_path_factory.mktemp("agui"), keys=keys) as live:
        yield live


@pytest.fixture
def api(server: LiveServer) -> Api:
    return Api(server.url, KEY)


def validate(event: dict[str, Any]) -> Any:
    """The event parsed by the official models (a wrong field or type raises)."""
    from pydantic import TypeAdapter

    model = TypeAdapter(ag_ui.Event).validate_python(event)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json")["type"] == event["type"]
    return model


def agui(api: Api, run_id: str, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
    frames = list(api.sse(f"/v1/runs/{run_id}/agui?after={after}"))
    out = [(int(f.id), f.data) for f in frames if f.id is not None]
    for _, event in out:
        validate(event)
    return out


def types(events: list[tuple[int, dict[str, Any]]]) -> list[str]:
    return [e["type"] for _, e in events if e["type"] not in ("CUSTOM", "STATE_SNAPSHOT")]


def test_a_paused_run_ends_in_an_interrupt_and_resumes_after_the_decision(api: Api) -> None:
    run = api.post("/v1/runs", {"agent": "hostile", "input": "go"}).json()
    first = agui(api, run["id"])
    seen = types(first)
    assert seen[0] == "RUN_STARTED" and seen[-1] == "RUN_FINISHED"
    assert seen.count("TOOL_CALL_START") == 2 and "TOOL_CALL_RESULT" in seen
    assert seen.index("TEXT_MESSAGE_START") < seen.index("TEXT_MESSAGE_CONTENT")
    finished = first[-1][1]
    outcome = finished["outcome"]
    assert outcome["type"] == "interrupt"
    [interrupt] = outcome["interrupts"]
    pending = wait_status(api, run["id"], "input_required")["pending_approvals"][0]
    assert interrupt["toolCallId"] == pending["call_id"]
    assert interrupt["metadata"]["arguments"] == pending["arguments"]
    assert "I will delete it" in interrupt["metadata"]["thought"]
    result = next(e for _, e in first if e["type"] == "TOOL_CALL_RESULT")
    assert HOSTILE in result["content"]  # carried as data, untouched
    api.post(f"/v1/runs/{run['id']}/approvals/{pending['call_id']}", {"decision": "approve"})
    rest = agui(api, run["id"], after=first[-1][0])
    seen = types(rest)
    assert seen[0] == "RUN_STARTED" and seen[-1] == "RUN_FINISHED"
    assert rest[0][1]["runId"] != first[0][1]["runId"]
    assert rest[0][1]["threadId"] == first[0][1]["threadId"] == run["id"]
    assert rest[-1][1]["outcome"] == {"type": "success"} and "Done:" in rest[-1][1]["result"]
    # a tool call announced with the interrupt is not announced twice
    assert "TOOL_CALL_START" not in seen and "TOOL_CALL_RESULT" in seen
    figure(f"AG-UI: a paused + resumed run gave {len(first) + len(rest)} events, all valid")


def test_rejected_and_cancelled_runs(api: Api) -> None:
    run = api.post("/v1/runs", {"agent": "gated", "input": "go"}).json()
    first = agui(api, run["id"])
    call_id = first[-1][1]["outcome"]["interrupts"][0]["id"]
    api.post(f"/v1/runs/{run['id']}/approvals/{call_id}", {"decision": "reject", "reason": "no"})
    rest = agui(api, run["id"], after=first[-1][0])
    assert rest[-1][1]["outcome"]["type"] == "success"
    assert "rejected" in next(e for _, e in rest if e["type"] == "TOOL_CALL_RESULT")["content"]
    slow = api.post("/v1/runs", {"agent": "slow", "input": "go"}).json()
    api.post(f"/v1/runs/{slow['id']}/cancel")
    done = agui(api, slow["id"])
    assert done[-1][1]["type"] == "RUN_FINISHED" and done[-1][1]["outcome"]["type"] == "cancelled"


def test_the_stream_needs_the_key_and_a_visible_run(server: LiveServer, api: Api) -> None:
    assert Api(server.url).get("/v1/runs/x/agui").status == 401
    assert api.get("/v1/runs/run_nope/agui").status == 404
    assert api.get("/v1/runs/%00/agui").status in (404, 422)


def _stored(seq: int, data: dict[str, Any]) -> StoredEvent:
    return StoredEvent(run_id="r", seq=seq, type=data["type"], data=data)


def test_translator_maps_streamed_text_failures_and_unknown_events() -> None:
    t = AguiTranslator("r")
    events: list[dict[str, Any]] = [
        {"type": "run_started", "time": 1.0, "step": 0, "parent_run_id": "p"},
        {"type": "text_delta", "text": "Hel", "step": 1},
        {"type": "text_delta", "text": "", "step": 1},
        {"type": "text_delta", "text": "lo", "step": 1},
        {"type": "model_text", "text": "Hello", "final": False, "step": 1},
        {"type": "tool_call", "call_id": "c1", "name": "t", "args": {"a": "\u2028<x>"}, "step": 1},
        {"type": "loop_detected", "kind": "repeated_call", "detail": "d", "action": "nudge"},
        {"type": "run_finished", "status": "failed", "error": "The model failed.", "usage": {}},
    ]
    out = [e for i, d in enumerate(events, 1) for e in t.translate(_stored(i, d))]
    for event in out:
        validate(event)
    kinds = [e["type"] for e in out]
    assert kinds == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "CUSTOM",
        "RUN_ERROR",
    ]
    assert out[0]["parentRunId"] == "p"
    assert json.loads(out[6]["delta"]) == {"a": "\u2028<x>"}
    assert out[-1]["message"] == "The model failed."


def test_child_runs_become_subagent_events() -> None:
    t = AguiTranslator("r")
    events: list[dict[str, Any]] = [
        {"type": "run_started", "run_id": "r", "agent": "boss"},
        {"type": "tool_call", "run_id": "r", "call_id": "c1", "name": "helper", "args": {}},
        {"type": "run_started", "run_id": "r.c1", "agent": "helper", "parent_run_id": "r"},
        {"type": "text_delta", "run_id": "r.c1", "text": "hi"},
        {"type": "model_text", "run_id": "r.c1", "text": "hi", "final": True},
        {"type": "run_started", "run_id": "r.c1.c2", "agent": "g", "parent_run_id": "r.c1"},
        {"type": "run_finished", "run_id": "r.c1.c2", "status": "failed", "error": "boom"},
        {"type": "run_finished", "run_id": "r.c1", "status": "completed", "output": "ok"},
        {"type": "tool_result", "run_id": "r", "call_id": "c1", "name": "helper", "content": "ok"},
        {"type": "run_finished", "run_id": "r", "status": "completed", "output": "done"},
    ]
    out = [e for i, d in enumerate(events, 1) for e in t.translate(_stored(i, d))]
    for event in out:
        validate(event)
    kinds = [e["type"] for e in out]
    assert kinds.count("RUN_STARTED") == 1 and kinds.count("RUN_FINISHED") == 1
    started = next(e for e in out if e["type"] == "SUBAGENT_STARTED")
    assert started == {**started, "subagentRunId": "r.c1", "parentToolCallId": "c1"}
    assert "parentSubagentRunId" not in started
    grand = [e for e in out if e["type"] == "SUBAGENT_STARTED"][1]
    assert grand["parentSubagentRunId"] == "r.c1" and grand["parentToolCallId"] == "c2"
    assert any(e["type"] == "SUBAGENT_ERROR" and e["message"] == "boom" for e in out)
    text = [e for e in out if e["type"].startswith("TEXT_MESSAGE")]
    assert len(text) == 3 and all(e["subagentRunId"] == "r.c1" for e in text)
    assert out[-1]["outcome"] == {"type": "success"} and out[-1]["result"] == "done"


def agui_post(api: Api, agent: str, body: Any) -> tuple[int, list[dict[str, Any]], Any]:
    """POST an AG-UI RunAgentInput; the status and the events (or the error body)."""
    reply = api.post(f"/v1/agents/{agent}/agui", body, headers={"Accept": "text/event-stream"})
    if reply.status != 200:
        return reply.status, [], reply.json()
    events = [
        json.loads(line[6:])
        for line in reply.body.decode().splitlines()
        if line.startswith("data: ")
    ]
    for event in events:
        validate(event)
    return 200, events, None


def run_input(thread: str, text: str = "go", resume: list[Any] | None = None) -> Any:
    """A body built with the official models (so it is what AG-UI clients send)."""
    from ag_ui.core import RunAgentInput, UserMessage

    body = RunAgentInput(
        thread_id=thread,
        run_id="client-run-1",
        state={},
        messages=[UserMessage(id="m1", role="user", content=text)],
        tools=[],
        context=[],
        forwarded_props={},
        resume=resume,
    )
    return body.model_dump(by_alias=True, exclude_none=True, mode="json")


def test_an_ag_ui_client_runs_an_agent_and_answers_its_interrupts(api: Api) -> None:
    from ag_ui.core import ResumeEntry

    status, events, _ = agui_post(api, "gated", run_input("t-1"))
    assert status == 200 and events[0]["type"] == "RUN_STARTED"
    thread = events[0]["threadId"]
    [interrupt] = events[-1]["outcome"]["interrupts"]

    def answer(payload: Any, state: str = "resolved", agent: str = "gated") -> Any:
        entry = ResumeEntry(interrupt_id=interrupt["id"], status=state, payload=payload)  # type: ignore[arg-type]
        return agui_post(api, agent, run_input(thread, resume=[entry]))

    refused = [
        answer({"decision": "approve", "arguments": {"path": 5}}),  # the tool's schema
        answer({"decision": "approve", "arguments": {"path": "a", "extra": 1}}),
        answer({"decision": "maybe"}),
        answer(None),
        answer("approve"),
        answer({"decision": "approve"}, agent="counting"),  # another agent's thread
    ]
    assert [r[0] for r in refused] == [422, 422, 422, 422, 422, 404], refused
    assert "invalid arguments for tool 'delete_file'" in refused[0][2]["error"]["message"]
    assert wait_status(api, thread, "input_required")["decisions"] == []
    status, events, _ = answer({"decision": "approve", "arguments": {"path": "b.txt"}})
    assert status == 200 and events[0]["type"] == "RUN_STARTED"
    assert events[-1]["outcome"] == {"type": "success"}
    assert events[-1]["result"] == "Result: deleted b.txt"
    assert answer({"decision": "approve"})[0] == 409  # decided already
    figure(f"AG-UI resume: {len(refused) + 1} bad or late answers refused, {len(refused) + 1} held")


def test_a_cancelled_interrupt_rejects_the_call(api: Api) -> None:
    from ag_ui.core import ResumeEntry

    _, events, _ = agui_post(api, "gated", run_input("t-2"))
    thread, call_id = events[0]["threadId"], events[-1]["outcome"]["interrupts"][0]["id"]
    entry = ResumeEntry(interrupt_id=call_id, status="cancelled")
    status, events, _ = agui_post(api, "gated", run_input(thread, resume=[entry]))
    assert status == 200 and "rejected" in str(events[-1]["result"])
    done = wait_status(api, thread, "completed")
    assert done["decisions"][0]["approve"] is False


def test_ag_ui_input_is_checked(api: Api) -> None:
    assert agui_post(api, "nope", run_input("t"))[0] == 404
    assert agui_post(api, "gated", {**run_input("t"), "messages": []})[0] == 422
    assert agui_post(api, "gated", {"threadId": "t"})[0] == 422
    resume = {**run_input("run_nope"), "resume": [{"interruptId": "c", "status": "resolved"}]}
    assert agui_post(api, "gated", resume)[0] == 404


def test_another_principal_can_neither_follow_nor_answer(server: LiveServer, api: Api) -> None:
    from ag_ui.core import ResumeEntry

    _, events, _ = agui_post(api, "gated", run_input("t-3"))
    thread, call_id = events[0]["threadId"], events[-1]["outcome"]["interrupts"][0]["id"]
    mallory = Api(server.url, MALLORY)
    entry = ResumeEntry(interrupt_id=call_id, status="resolved", payload={"decision": "approve"})
    tries = [
        mallory.get(f"/v1/runs/{thread}/agui").status,
        mallory.get(f"/v1/runs/{thread}/agui?after=1").status,
        agui_post(mallory, "gated", run_input(thread, resume=[entry]))[0],
        agui_post(mallory, "counting", run_input(thread, resume=[entry]))[0],
        mallory.post(f"/v1/runs/{thread}/approvals/{call_id}", {"decision": "approve"}).status,
    ]
    assert tries == [404] * 5, tries
    assert wait_status(api, thread, "input_required")["decisions"] == []
    figure(f"AG-UI cross-principal: {len(tries)} follow/answer attempts on another's run, all 404")
