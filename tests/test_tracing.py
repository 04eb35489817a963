"""OpenTelemetry GenAI spans from the tracing capability, read back from the SDK's
in-memory exporter."""

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from loopwise import Agent, Capability, ModelPrice, RunContext, tool
from loopwise.messages import AssistantMessage, TextPart, Usage
from loopwise.models import Model
from loopwise.models.testing import ScriptedModel, call
from loopwise.tracing import Tracing


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


@tool
def broken() -> str:
    """Always fails."""
    raise ValueError("disk on fire")


def by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_a_run_is_an_agent_span_with_chat_and_tool_spans(spans: Any) -> None:
    provider, exporter = spans
    answer = AssistantMessage(
        parts=(TextPart(text="3"),),
        usage=Usage(requests=1, input_tokens=120, output_tokens=4, cache_read_tokens=100),
        model_name="scripted-2026",
        finish_reason="stop",
    )
    agent = Agent(
        ScriptedModel([call("add", a=1, b=2), answer]),
        tools=[add],
        name="calc",
        price=ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0),
        capabilities=[Tracing(provider)],
    )
    result = agent.run_sync("1+2?")
    assert result.status == "completed"
    found = exporter.get_finished_spans()
    names = sorted(s.name for s in found)
    assert names == ["chat scripted", "chat scripted", "execute_tool add", "invoke_agent calc"]
    root = by_name(exporter)["invoke_agent calc"]
    assert root.parent is None
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "calc"
    assert root.attributes["gen_ai.usage.input_tokens"] == result.usage.input_tokens
    assert root.attributes["loopwise.cost_usd"] == pytest.approx(result.cost_usd)
    assert root.attributes["loopwise.status"] == "completed"
    for s in found:
        if s is not root:
            assert s.parent is not None and s.parent.span_id == root.context.span_id
            assert s.context.trace_id == root.context.trace_id
    tool_span = by_name(exporter)["execute_tool add"]
    assert tool_span.attributes["gen_ai.tool.name"] == "add"
    assert tool_span.attributes["gen_ai.tool.call.id"] == result.state.messages[2].tool_calls[0].id  # type: ignore[union-attr]
    chats = [s for s in found if s.name.startswith("chat")]
    last = max(chats, key=lambda s: s.start_time)
    assert last.attributes["gen_ai.operation.name"] == "chat"
    assert last.attributes["gen_ai.request.model"] == "scripted"
    assert last.attributes["gen_ai.response.model"] == "scripted-2026"
    assert last.attributes["gen_ai.usage.input_tokens"] == 120  # includes the cached 100
    assert last.attributes["gen_ai.usage.cache_read.input_tokens"] == 100
    assert last.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "gen_ai.input.messages" not in last.attributes  # content is off by default


def test_content_is_captured_only_when_asked(spans: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    provider, exporter = spans
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    Agent(
        ScriptedModel([call("add", a=40, b=2), "42"]),
        tools=[add],
        capabilities=[Tracing(provider)],
    ).run_sync("secret question")
    spans_ = by_name(exporter)
    assert "secret question" in spans_["chat scripted"].attributes["gen_ai.input.messages"]
    assert spans_["execute_tool add"].attributes["gen_ai.tool.call.result"] == "42"


def test_errors_carry_their_type(spans: Any) -> None:
    provider, exporter = spans
    result = Agent(
        ScriptedModel([call("broken")]),  # then the script runs out: a model error
        tools=[broken],
        capabilities=[Tracing(provider)],
    ).run_sync("go")
    assert result.status == "failed"
    found = by_name(exporter)
    tool_span = found["execute_tool broken"]
    assert tool_span.attributes["error.type"] == "ValueError"
    assert tool_span.status.status_code is StatusCode.ERROR
    failed_chats = [
        s for s in exporter.get_finished_spans()
        if s.name.startswith("chat") and s.status.status_code is StatusCode.ERROR
    ]  # fmt: skip
    assert [s.attributes["error.type"] for s in failed_chats] == ["ModelError"]
    root = found["invoke_agent agent"]
    assert root.status.status_code is StatusCode.ERROR and root.attributes["error.type"] == "error"


def test_a_child_run_nests_under_its_parents_tool_span(spans: Any) -> None:
    provider, exporter = spans
    child = Agent(ScriptedModel([call("add", a=1, b=1), "2"]), tools=[add], name="helper")
    parent = Agent(
        ScriptedModel([call("helper", task="add one and one"), "it is 2"]),
        tools=[child.as_tool()],
        name="lead",
        capabilities=[Tracing(provider)],
    )
    assert parent.run_sync("go").status == "completed"
    found = by_name(exporter)
    lead, helper = found["invoke_agent lead"], found["invoke_agent helper"]
    via = found["execute_tool helper"]
    assert via.parent.span_id == lead.context.span_id
    assert helper.parent.span_id == via.context.span_id
    assert found["execute_tool add"].parent.span_id == helper.context.span_id
    assert len({s.context.trace_id for s in exporter.get_finished_spans()}) == 1


def test_policy_and_approval_decisions_are_events(spans: Any) -> None:
    provider, exporter = spans

    @tool(requires_approval=True)
    def delete(path: str) -> str:
        """Delete."""
        return "gone"

    Agent(
        ScriptedModel([call("delete", path="a")]),
        tools=[delete],
        capabilities=[Tracing(provider)],
    ).run_sync("go")
    root = by_name(exporter)["invoke_agent agent"]
    [event] = [e for e in root.events if e.name == "loopwise.approval_requested"]
    assert event.attributes["name"] == "delete" and "args" not in event.attributes
    assert root.attributes["loopwise.status"] == "input_required"


class Replay(Capability):
    """Stands in for a durable run's checkpoints: the model answers from a cache, the
    wrapped (traced) model is not called again."""

    def __init__(self) -> None:
        self.cached: list[AssistantMessage] = []

    def wrap_model(self, run: RunContext, model: Model) -> Model:
        outer = self

        class Cached:
            provider, model_name, context_window = model.provider, model.model_name, None

            async def request(self, messages: Any, tools: Any, settings: Any) -> AssistantMessage:
                if outer.cached:
                    return outer.cached.pop(0)
                return await model.request(messages, tools, settings)

        return Cached()  # type: ignore[return-value]


def test_a_replayed_step_makes_no_second_span(spans: Any) -> None:
    provider, exporter = spans
    replay = Replay()
    replay.cached = [AssistantMessage(parts=(TextPart(text="from the checkpoint"),))]
    agent = Agent(ScriptedModel(["live"]), capabilities=[Tracing(provider), replay])
    assert agent.run_sync("go").output == "from the checkpoint"
    assert [s.name for s in exporter.get_finished_spans()] == ["invoke_agent agent"]


def test_nothing_is_exported_without_a_provider_or_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    tracing = Tracing()
    assert Agent(ScriptedModel(["ok"]), capabilities=[tracing]).run_sync("go").output == "ok"
    assert type(tracing.tracer).__name__ in ("ProxyTracer", "NoOpTracer")
