"""Pipelines of agents: stages run in order, each task written from the input and the
outputs of earlier stages, with an optional review → revise loop bounded by a round count::

    pipeline = Pipeline(
        Stage("research", researcher, "Collect the facts about {input}."),
        review_loop("article", writer, reviewer, rounds=2,
                    task="Write a short article about {input} from these notes:\\n{research}"),
        budget=Budget(max_tokens=200_000),
    )
    result = await pipeline.run("SQLite WAL mode")
    result.outputs["article"]

All stages spend from the pipeline's one budget (:class:`~loopwise.agents.TeamBudget`).
"""

from __future__ import annotations

import asyncio
import re
import string
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..messages import Usage
from .budget import TeamBudget

if TYPE_CHECKING:
    from ..agent import Agent
    from ..approval import ApprovalCallback
    from ..events import Event
    from ..limits import Budget
    from ..result import RunResult
    from ..scope import RunScope

__all__ = ["Pipeline", "PipelineResult", "ReviewLoop", "Stage", "review_loop"]

REVIEW_TASK = """\
Review the draft below for the task it answers. If it is accurate, complete and clear, \
answer starting with APPROVED. Otherwise list the concrete changes it needs.

Task:
{task}

Draft:
{draft}"""

REVISE_TASK = """\
Revise your draft to address the review. Answer with the complete new version only.

Task:
{task}

Draft:
{draft}

Review:
{review}"""


@dataclass(frozen=True, slots=True)
class Stage:
    """One agent run: ``task`` is a template filled with ``{input}`` and the outputs of
    earlier stages by name (``{research}``), or a function of those values."""

    name: str
    agent: Agent[Any, Any]
    task: str | Callable[[Mapping[str, Any]], str] = "{input}"

    def prompt(self, values: Mapping[str, Any]) -> str:
        if callable(self.task):
            return self.task(values)
        check_template(self.name, self.task, values)
        try:
            return self.task.format_map(values)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"Stage {self.name!r}: the task cannot be filled in: {exc}.") from None


def check_template(stage: str, task: str, names: Iterable[str]) -> None:
    """Refuse a task template that names anything but ``names`` or is not a valid format
    string (a literal brace must be doubled: ``{{`` and ``}}``)."""
    known = set(names)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(task) if f is not None]
    except ValueError as exc:
        raise UsageError(
            f"Stage {stage!r}: the task is not a valid template ({exc}); write a literal "
            "brace as {{ or }}."
        ) from None
    for field_name in fields:
        name = re.split(r"[.\[]", field_name, maxsplit=1)[0]
        if name not in known:
            raise UsageError(
                f"Stage {stage!r}: the task names {name!r}, which is neither 'input' nor an "
                f"earlier stage ({', '.join(sorted(known))}); a literal brace is {{{{ or }}}}."
            )


@dataclass(frozen=True, slots=True)
class ReviewLoop:
    """The writer drafts, the reviewer reviews, the writer revises — at most ``rounds``
    reviews. A review approves when it starts with "APPROVED" (or, for a structured
    reviewer, when its output has ``approved=True``)."""

    name: str
    writer: Agent[Any, Any]
    reviewer: Agent[Any, Any]
    task: str | Callable[[Mapping[str, Any]], str] = "{input}"
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise UsageError(f"review_loop needs rounds of 1 or more, not {self.rounds}.")


def review_loop(
    name: str,
    writer: Agent[Any, Any],
    reviewer: Agent[Any, Any],
    *,
    rounds: int = 1,
    task: str | Callable[[Mapping[str, Any]], str] = "{input}",
) -> ReviewLoop:
    """A stage named ``name`` whose output is the writer's last draft (see :class:`ReviewLoop`)."""
    return ReviewLoop(name, writer, reviewer, task, rounds)


@dataclass(slots=True)
class PipelineResult:
    """``status`` is ``completed`` when every stage completed; otherwise the status of the
    stage that did not (``failed_stage``), with its ``stop_reason``. ``outputs`` maps each
    finished stage to its output; ``runs`` are all runs in order; ``reviews`` the reviews."""

    run_id: str
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    runs: list[RunResult[Any]] = field(default_factory=list)
    reviews: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    failed_stage: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0

    @property
    def output(self) -> Any:
        """The last stage's output (``None`` unless completed)."""
        return list(self.outputs.values())[-1] if self.status == "completed" else None


class _Stopped(Exception):
    def __init__(self, stage: str, result: RunResult[Any]):
        self.stage = stage
        self.result = result


class Pipeline:
    """Stages run one after the other under one budget; see the module docstring."""

    def __init__(
        self, *stages: Stage | ReviewLoop, budget: Budget | None = None, name: str = "pipeline"
    ):
        names = [s.name for s in stages]
        if not stages or len(set(names)) != len(names) or "input" in names:
            raise UsageError(
                f"A pipeline needs at least one stage, each with its own name (not 'input'); "
                f"got {names}."
            )
        known = ["input"]
        for stage in stages:  # a broken template fails here, not after earlier stages ran
            if isinstance(stage.task, str):
                check_template(stage.name, stage.task, known)
            known.append(stage.name)
        self.stages = stages
        self.budget = budget
        self.name = name

    async def run(
        self,
        input: str,
        *,
        cancel: asyncio.Event | None = None,
        approve: ApprovalCallback | None = None,
        on_event: Callable[[Event], None] | None = None,
        run_id: str | None = None,
        parent: RunScope | None = None,
    ) -> PipelineResult:
        """Run every stage; ``on_event`` sees the events of all runs (their
        ``parent_run_id`` is this pipeline's ``run_id``). With ``parent`` (a tool's
        ``ctx.run``) the pipeline spends from that run's budget too."""
        team = TeamBudget(
            self.budget,
            run_id=run_id or f"{self.name}_{uuid.uuid4().hex[:12]}",
            cancel=cancel,
            approve=approve,
            emit=on_event,
            parent=parent,
        )
        out = PipelineResult(run_id=team.run_id, status="completed")
        values: dict[str, Any] = {"input": input}
        try:
            for stage in self.stages:
                if isinstance(stage, Stage):
                    values[stage.name] = await _run(
                        team, out, stage.name, stage.agent, stage.prompt(values)
                    )
                else:
                    values[stage.name] = await _review(team, out, stage, values)
                out.outputs[stage.name] = values[stage.name]
        except _Stopped as stop:
            out.status, out.stop_reason = stop.result.status, stop.result.stop_reason
            out.failed_stage = stop.stage
        out.usage, out.cost_usd = team.usage, team.cost_usd
        return out

    def run_sync(self, input: str, **kwargs: Any) -> PipelineResult:
        """:meth:`run` for code that is not async."""
        return asyncio.run(self.run(input, **kwargs))


async def _run(
    team: TeamBudget, out: PipelineResult, stage: str, agent: Agent[Any, Any], task: str
) -> Any:
    stream = agent.stream(
        task,
        parent=team.scope,
        cancel=team.scope.cancel,
        text_deltas=False,
        run_id=f"{team.run_id}.{stage}.{len(out.runs) + 1}",
    )
    async for event in stream:
        if team.scope.emit is not None:
            team.scope.emit(event)
    result = stream.result
    out.runs.append(result)
    if result.status != "completed":
        raise _Stopped(stage, result)
    return result.output


async def _review(
    team: TeamBudget, out: PipelineResult, loop: ReviewLoop, values: Mapping[str, Any]
) -> Any:
    task = Stage(loop.name, loop.writer, loop.task).prompt(values)
    draft = await _run(team, out, loop.name, loop.writer, task)
    for _ in range(loop.rounds):
        review = await _run(
            team,
            out,
            f"{loop.name}-review",
            loop.reviewer,
            REVIEW_TASK.format(task=task, draft=draft),
        )
        approved, text = _verdict(review)
        out.reviews.append(text)
        if approved:
            break
        draft = await _run(
            team,
            out,
            loop.name,
            loop.writer,
            REVISE_TASK.format(task=task, draft=draft, review=text),
        )
    return draft


def _verdict(review: Any) -> tuple[bool, str]:
    if isinstance(review, str):
        return review.lstrip().upper().startswith("APPROVED"), review
    approved = bool(getattr(review, "approved", False))
    dump: Callable[[], str] | None = getattr(review, "model_dump_json", None)
    return approved, dump() if dump is not None else str(review)
