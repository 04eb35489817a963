"""A team under one budget: a lead agent asks a researcher agent (used as a tool), then a
writer drafts and a reviewer reviews until approved — offline, with test models.

Run: python examples/team_review.py
"""

from __future__ import annotations

from loopwise import Agent
from loopwise.agents import Pipeline, Stage, review_loop
from loopwise.events import Event, RunFinished, RunStarted
from loopwise.limits import Budget
from loopwise.models.testing import FunctionModel, ScriptedModel, call

# The researcher is an agent of its own; the lead calls it like any tool.
researcher = Agent(
    ScriptedModel(["SQLite's WAL mode lets readers work while one writer writes."]),
    name="researcher",
    system="You research a topic and answer with the facts.",
)
lead = Agent(
    ScriptedModel([call("researcher", task="How does WAL mode help readers?"), "Notes ready."]),
    tools=[researcher.as_tool()],
    name="lead",
)
drafts = iter(["WAL: readers wait.", "WAL: readers work while one writer writes."])
writer = Agent(FunctionModel(lambda m, t: next(drafts)), name="writer")
reviewer = Agent(
    FunctionModel(lambda m, t: "APPROVED" if "readers work" in str(m[-1]) else "Wrong: fix it."),
    name="reviewer",
)

pipeline = Pipeline(
    Stage("notes", lead, "Collect notes on {input}."),
    review_loop("article", writer, reviewer, rounds=3, task="Write on {input}: {notes}"),
    budget=Budget(max_tokens=50_000),  # one budget for every run, children included
)


def show(event: Event) -> None:
    if isinstance(event, RunStarted | RunFinished):
        indent = "  " * (1 + event.run_id.count(".") - 2)
        print(f"{indent}{event.type} {'.'.join(event.run_id.split('.')[1:])}")


result = pipeline.run_sync("SQLite WAL mode", on_event=show)
print(result.status, "after", len(result.reviews), "reviews")
print("article:", result.output)
print("tokens:", result.usage.total_tokens, "of 50000")
