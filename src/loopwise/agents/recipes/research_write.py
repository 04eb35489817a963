"""Recipe ``research-write``: a researcher reads the given sources (URLs with ``http_get``,
files with ``read_file``; no search engine is assumed), a writer drafts a document on the
topic from the notes, a reviewer reviews it and the writer revises — a
:class:`~loopwise.agents.Pipeline` with a :func:`~loopwise.agents.review_loop`.

The researcher's notes always include the text of every source: when the model did not
fetch one, the recipe does. The document itself is the model's writing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...agent import Agent
from ...approval import ApprovalCallback
from ...errors import UsageError
from ...events import Event
from ...limits import Budget
from ...models import Model
from ...toolkits import files, http
from ..pipeline import Pipeline, review_loop
from .base import Need, Recipe, RecipeResult, ReportNotWritten, check_out, write_report

__all__ = ["research_write"]

RESEARCHER = """\
You are a researcher. Read every source you are given (http_get for URLs, read_file for \
files), then answer with notes: the facts that matter for the topic, each with its source."""
WRITER = """\
You are a writer. Write a clear, accurate Markdown document on the topic using only the \
notes you are given. Answer with the document only."""
REVIEWER = """\
You are a strict reviewer. Check the draft against the task: accuracy, completeness, \
clarity. Answer starting with APPROVED if it needs no change; otherwise list the changes."""


async def research_write(
    topic: str,
    out: str | Path,
    *,
    sources: Sequence[str],
    model: str | Model | None = None,
    rounds: int = 1,
    allow: Sequence[str] = (),
    workspace: str | Path | None = None,
    approve: ApprovalCallback | None = None,
    budget: Budget | None = None,
    on_event: Callable[[Event], None] | None = None,
    max_steps: int = 12,
) -> RecipeResult:
    """Research ``topic`` from ``sources`` and write the reviewed document to ``out``.

    File sources are read inside ``workspace`` (default: the working directory)."""
    if not topic.strip() or not sources:
        raise UsageError("research-write needs a topic and at least one --source URL or file.")
    check_out(out)
    writer: Agent[Any, Any] = Agent(model, system=WRITER, max_steps=3, name="writer")
    reviewer: Agent[Any, Any] = Agent(model, system=REVIEWER, max_steps=3, name="reviewer")
    pipeline = Pipeline(
        review_loop(  # checks rounds before any model call
            "document",
            writer,
            reviewer,
            rounds=rounds,
            task=lambda v: f"Write a document on: {topic}\n\nNotes:\n{v['input']}",
        ),
        name="research-write",
    )
    root = Path(workspace or ".")
    tools = [*http(allow=list(allow)), *files(root, read_only=True)]
    needs = [
        Need("http_get", {"url": s})
        if s.startswith(("http://", "https://"))
        else Need("read_file", {"path": s})
        for s in sources
    ]
    task = f"Topic: {topic}\nSources:\n" + "\n".join(f"- {s}" for s in sources)
    recipe = Recipe(
        "research-write",
        model,
        budget=budget,
        approve=approve,
        on_event=on_event,
        max_steps=max_steps,
    )
    texts = await recipe.gather(tools, RESEARCHER, task, needs)
    if all(_unread(t) for t in texts):  # a document from no source would be made up
        why = "; ".join(
            f"{s}: {t.splitlines()[0][:200] if t else 'no answer'}"
            for s, t in zip(sources, texts, strict=True)
        )
        return recipe.result("failed", f"No source could be read, so nothing was written ({why}).")
    research = recipe.runs[-1].output if recipe.runs[-1].status == "completed" else ""
    notes = "\n\n".join(
        [str(research or ""), *(f"Source {s}:\n{t}" for s, t in zip(sources, texts, strict=True))]
    )
    result = await pipeline.run(notes, parent=recipe.team.scope, on_event=on_event)
    recipe.runs.extend(result.runs)
    facts: dict[str, Any] = {"topic": topic, "sources": list(sources), "reviews": result.reviews}
    if result.status != "completed":
        return recipe.result(
            "incomplete",
            f"The {result.failed_stage} stage ended {result.status} ({result.stop_reason}).",
            facts=facts,
        )
    document = str(result.output).rstrip() + "\n\n## Sources\n\n"
    document += "\n".join(f"- {s}" for s in sources) + "\n"
    try:
        path = await write_report(out, document, workspace=workspace, approve=approve)
    except ReportNotWritten as exc:
        return recipe.result("incomplete", str(exc), facts=facts)
    summary = (
        f"Wrote {path.name} on {topic!r} from {len(sources)} sources after "
        f"{len(result.reviews)} review(s)."
    )
    return recipe.result(
        "completed",
        summary,
        artifacts=[str(path)],
        facts=facts,
        next_steps=["Read the document and check it against the sources."],
    )


def _unread(text: str) -> bool:
    """Whether a source's observation is an error (a tool error or an HTTP 4xx/5xx page)."""
    return (
        not text.strip() or text.startswith("ERROR") or re.match(r"HTTP [45]\d\d", text) is not None
    )
