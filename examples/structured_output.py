"""Structured output and human approval, tested offline with a ScriptedModel.

The agent must answer with a validated ``Cleanup`` object; deleting needs approval, given
here by a callback. Shows how to test your own agents: script the model's turns and
assert on what reached it (``model.requests``).
"""

from __future__ import annotations

from pydantic import BaseModel

from loopwise import Agent, ApprovalRequest, tool
from loopwise.models.testing import ScriptedModel, call

FILES = {"report.txt": 120, "cache.tmp": 4096, "notes.md": 300}


class Cleanup(BaseModel):
    deleted: list[str]
    bytes_freed: int


@tool
def list_files() -> dict[str, int]:
    """List files with their sizes in bytes."""
    return dict(FILES)


@tool(requires_approval=True)
def delete_file(name: str) -> str:
    """Delete a file (asks a human first).

    Args:
        name: The file's name.
    """
    size = FILES.pop(name)
    return f"deleted {name} ({size} bytes)"


def approve(request: ApprovalRequest) -> bool:
    print(f"approval asked: {request.tool_name}({request.args}) -> approved")
    return request.args["name"].endswith(".tmp")


model = ScriptedModel(
    [
        ["I will look at the files first.", call("list_files")],
        ["cache.tmp is a temporary file; I will delete it.", call("delete_file", name="cache.tmp")],
        call("final_answer", deleted=["cache.tmp"], bytes_freed=4096),
    ]
)
agent = Agent(model, tools=[list_files, delete_file], output_type=Cleanup, approve=approve)

if __name__ == "__main__":
    result = agent.run_sync("Free some disk space by deleting temporary files.")
    assert result.output is not None
    print(result.status, result.output.model_dump_json())
    print("files left:", sorted(FILES))
    print("the model saw", len(model.requests), "requests")
