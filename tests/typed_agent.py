"""Type-level checks, verified by mypy --strict in scripts/test.sh (not run by pytest)."""

from typing import assert_type

from pydantic import BaseModel

from loopwise import Agent, RunResult, ToolContext, tool
from loopwise.models.testing import ScriptedModel


class Report(BaseModel):
    status: str


@tool
def ping(ctx: ToolContext[int], host: str) -> str:
    """Ping a host."""
    return f"{host} {ctx.deps}"


def check() -> None:
    plain = Agent(ScriptedModel(["x"]), tools=[ping])
    assert_type(plain, Agent[None, str])
    assert_type(plain.run_sync("go"), RunResult[str])

    typed = Agent(ScriptedModel(["x"]), output_type=Report, deps_type=int)
    assert_type(typed, Agent[int, Report])
    result = typed.run_sync("go", deps=3)
    assert_type(result.output, Report | None)
