"""Structured answers: a schema for the model, validation errors back, bounded retries."""

from pydantic import BaseModel, Field

from loopwise import Agent, ToolResultPart, UserMessage, tool
from loopwise.models.testing import ScriptedModel, call
from loopwise.output import FINAL_ANSWER_TOOL


class Report(BaseModel):
    """A short status report."""

    status: str
    score: int = Field(ge=0, le=10)


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return "value"


def test_structured_answer_via_final_answer_tool() -> None:
    model = ScriptedModel([call("lookup", key="k"), call(FINAL_ANSWER_TOOL, status="ok", score=7)])
    result = Agent(model, tools=[lookup], output_type=Report).run_sync("report")
    assert result.status == "completed"
    assert result.output == Report(status="ok", score=7)
    final = next(t for t in model.requests[0].tools if t.name == FINAL_ANSWER_TOOL)
    assert final.parameters["properties"]["score"]["maximum"] == 10
    assert "A short status report." in final.description


def test_invalid_answer_gets_the_error_and_retries() -> None:
    model = ScriptedModel(
        [
            call(FINAL_ANSWER_TOOL, status="ok", score=99),
            call(FINAL_ANSWER_TOOL, status="ok", score=9),
        ]
    )
    result = Agent(model, output_type=Report).run_sync("report")
    assert result.output == Report(status="ok", score=9)
    feedback = model.requests[1].messages[-1]
    assert isinstance(feedback, UserMessage)
    part = feedback.parts[0]
    assert isinstance(part, ToolResultPart) and part.is_error
    assert "score" in part.content and "less than or equal to 10" in part.content


def test_retries_are_bounded() -> None:
    model = ScriptedModel([call(FINAL_ANSWER_TOOL, status="ok", score=99)] * 10)
    result = Agent(model, output_type=Report, output_retries=2).run_sync("report")
    assert (result.status, result.stop_reason) == ("failed", "invalid_output")
    assert len(model.requests) == 3


def test_plain_json_text_is_accepted_and_prose_is_corrected() -> None:
    model = ScriptedModel(['```json\n{"status": "ok", "score": 3}\n```'])
    assert Agent(model, output_type=Report).run_sync("r").output == Report(status="ok", score=3)
    model = ScriptedModel(["All good!", call(FINAL_ANSWER_TOOL, status="ok", score=1)])
    result = Agent(model, output_type=Report).run_sync("r")
    assert result.output == Report(status="ok", score=1)
    note = model.requests[1].messages[-1]
    assert isinstance(note, UserMessage) and "final_answer" in note.parts[0].text  # type: ignore[union-attr]


def test_non_object_output_types_are_wrapped() -> None:
    model = ScriptedModel([call(FINAL_ANSWER_TOOL, result=[1, 2, 3])])
    result = Agent(model, output_type=list[int]).run_sync("numbers")  # type: ignore[arg-type]
    assert result.output == [1, 2, 3]


def test_final_answer_mixed_with_other_calls_is_deferred() -> None:
    model = ScriptedModel(
        [
            [call("lookup", key="k"), call(FINAL_ANSWER_TOOL, status="early", score=1)],
            call(FINAL_ANSWER_TOOL, status="ok", score=2),
        ]
    )
    result = Agent(model, tools=[lookup], output_type=Report).run_sync("r")
    assert result.output == Report(status="ok", score=2)
    parts = model.requests[1].messages[-1].parts  # type: ignore[union-attr]
    assert parts[0].content == "value"  # type: ignore[union-attr]
    assert "must be called alone" in parts[1].content  # type: ignore[union-attr]


def test_empty_text_answer_is_retried() -> None:
    result = Agent(ScriptedModel(["", "done"])).run_sync("go")
    assert result.output == "done"
