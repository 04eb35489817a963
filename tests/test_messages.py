"""Messages round-trip through JSON exactly; the public API is curated and complete."""

import loopwise
from loopwise.messages import (
    AssistantMessage,
    DocumentPart,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
    UserMessage,
    dump_messages,
    load_messages,
)


def test_every_part_round_trips() -> None:
    messages = [
        SystemMessage(content="sys"),
        UserMessage(
            parts=(
                TextPart(text="hi ☃"),
                ImagePart(media_type="image/png", data="iVBO"),
                DocumentPart(media_type="application/pdf", data="JVBE", text="t"),
            )
        ),
        AssistantMessage(
            parts=(
                TextPart(text="thinking"),
                ToolCallPart(id="c1", name="f", args={"a": [1, {"b": None}]}),
                ToolCallPart(id="c2", name="g", raw_args="{bad"),
            ),
            usage=Usage(requests=1, input_tokens=10, output_tokens=2, cache_read_tokens=3),
            model_name="m",
            finish_reason="tool_calls",
        ),
        UserMessage(
            parts=(
                ToolResultPart(call_id="c1", name="f", content="ok"),
                ToolResultPart(call_id="c2", name="g", content="ERR", is_error=True),
            )
        ),
    ]
    text = dump_messages(messages)
    assert load_messages(text) == messages
    assert load_messages(__import__("json").loads(text)) == messages


def test_public_api_is_exported() -> None:
    for name in loopwise.__all__:
        assert hasattr(loopwise, name), name
    for name in ("Agent", "tool", "ToolContext", "Budget", "RunResult"):
        assert name in loopwise.__all__
    from loopwise.models.testing import FunctionModel, ScriptedModel, call  # noqa: F401


def test_usage_adds() -> None:
    total = Usage(input_tokens=1, output_tokens=2) + Usage(input_tokens=3, requests=1)
    assert (total.input_tokens, total.output_tokens, total.requests, total.total_tokens) == (
        4,
        2,
        1,
        6,
    )
