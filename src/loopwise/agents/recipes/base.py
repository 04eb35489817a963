"""What every recipe shares: the result, gathering facts with model-driven tools (and the
same tools called by the recipe for any fact the model did not fetch), the model's summary,
and writing the report through the files toolkit, with approval before anything
irreversible.

A recipe takes its facts only from real tool observations, never from what the model
claims, so a weak model makes a thinner summary, not a wrong report.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...agent import Agent
from ...approval import ApprovalCallback, ApprovalRequest, Approve, as_decision
from ...errors import ModelRetry, UsageError
from ...events import Event
from ...limits import Budget
from ...messages import AssistantMessage, ToolResultPart, UserMessage
from ...models import Model, ModelSettings
from ...result import RunResult
from ...tools import Tool, ToolContext, render_exception, render_result
from ..budget import TeamBudget
from .grounding import ungrounded

__all__ = ["Need", "Recipe", "RecipeResult", "ReportNotWritten", "check_out", "write_report"]

Status = Literal["completed", "incomplete", "failed"]


@dataclass(slots=True)
class RecipeResult:
    """``status``, a ``summary``, the files written (``artifacts``) and ``next_steps``, as
    the seed's recipes return them; ``facts`` are the structured findings and ``notes``
    say what the recipe did itself because the model did not. ``summary_source`` says who
    wrote the summary: ``model`` (checked against the facts) or the ``recipe`` itself."""

    status: Status
    summary: str
    artifacts: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary_source: Literal["model", "recipe"] = "recipe"
    runs: list[RunResult[Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["runs"] = [r.summary() for r in self.runs]
        return data


@dataclass(frozen=True, slots=True)
class Need:
    """A fact the report needs: a call of ``tool`` whose arguments include ``args``."""

    tool: str
    args: Mapping[str, Any]

    def met_by(self, t: Tool, name: str, args: Mapping[str, Any]) -> bool:
        """Whether a call made these very arguments (defaults filled in on both sides)."""
        if name != self.tool:
            return False
        try:
            return t.validate(args) == t.validate(self.args)
        except ValueError:
            return False


class ReportNotWritten(Exception):
    """Writing the report was refused (no approval to overwrite or to leave the workspace)."""


class Recipe:
    """A recipe's run: one team budget, an investigator with tools, a summary writer."""

    def __init__(
        self,
        name: str,
        model: str | Model | None,
        *,
        budget: Budget | None = None,
        approve: ApprovalCallback | None = None,
        on_event: Callable[[Event], None] | None = None,
        cancel: asyncio.Event | None = None,
        max_steps: int = 12,
    ):
        self.name = name
        self.model = model
        self.approve = approve
        self.max_steps = max_steps
        self.team = TeamBudget(budget, run_id=None, cancel=cancel, approve=approve, emit=on_event)
        self.runs: list[RunResult[Any]] = []
        self.notes: list[str] = []
        self.summary_source: Literal["model", "recipe"] = "recipe"

    async def _run(self, agent: Agent[Any, Any], task: str) -> RunResult[Any]:
        stream = agent.stream(
            task, parent=self.team.scope, cancel=self.team.scope.cancel, text_deltas=False
        )
        async for event in stream:
            if self.team.scope.emit is not None:
                self.team.scope.emit(event)
        self.runs.append(stream.result)
        return stream.result

    async def gather(
        self, tools: Sequence[Tool], system: str, task: str, needs: Sequence[Need]
    ) -> list[str]:
        """Let the model investigate with ``tools``; the observation for each need, from
        the model's own calls where it made them, else from calling the tool here."""
        agent: Agent[Any, Any] = Agent(
            self.model,
            tools=tools,
            system=system,
            max_steps=self.max_steps,
            name=f"{self.name}-investigator",
            settings=ModelSettings(max_tokens=1024),
        )
        result = await self._run(agent, task)
        seen = observations(result)
        by_name = {t.name: t for t in tools}
        found: list[str] = []
        for need in needs:
            t = by_name[need.tool]
            hit = next((text for name, args, text in seen if need.met_by(t, name, args)), None)
            if hit is None:
                hit = await call_tool(t, dict(need.args))
                self.notes.append(f"The recipe called {need.tool}({_args(need.args)}) itself.")
            found.append(hit)
        return found

    async def summarise(
        self, facts: str, fallback: str, *, grounding: str = ""
    ) -> tuple[str, list[str]]:
        """The model's summary and next steps from the facts, if everything they claim is in
        ``facts`` (or ``grounding``, the report's other facts); else ``fallback``."""
        agent: Agent[Any, Any] = Agent(
            self.model,
            system=SUMMARY_SYSTEM,
            max_steps=2,
            name=f"{self.name}-writer",
            settings=ModelSettings(max_tokens=600),
        )
        result = await self._run(agent, f"Facts:\n{facts}")
        text = result.output if result.status == "completed" else None
        if not isinstance(text, str) or not text.strip():
            self.notes.append("The model wrote no summary; the recipe's own summary is used.")
            return fallback, []
        missing = ungrounded(text, "\n".join((facts, grounding, fallback)))
        if missing:
            self.notes.append(
                f"The model's summary was not used: it mentions {', '.join(missing[:6])}, "
                "not in the report's facts; the recipe's own summary is used."
            )
            return fallback, []
        self.summary_source = "model"
        return split_next_steps(text)

    def summary_section(self, summary: str) -> str:
        """The report's summary with who wrote it."""
        if self.summary_source == "model":
            return f"{summary}\n\n_Written by the model; its numbers and names are in the facts._"
        return f"{summary}\n\n_The recipe's own summary, from the facts alone._"

    def result(self, status: Status, summary: str, **kw: Any) -> RecipeResult:
        return RecipeResult(
            status,
            summary,
            runs=self.runs,
            notes=self.notes,
            summary_source=self.summary_source,
            **kw,
        )


SUMMARY_SYSTEM = """\
You write the summary of a technical report from the facts you are given, and nothing else.
Write one short paragraph that states the most important findings, using the facts only.
Then write a line "Next steps:" followed by up to five lines starting with "- "."""


def observations(result: RunResult[Any]) -> list[tuple[str, dict[str, Any], str]]:
    """Every successful tool call of a run: (tool, arguments, observation), in order."""
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    found: list[tuple[str, dict[str, Any], str]] = []
    for message in result.messages:
        if isinstance(message, AssistantMessage):
            calls.update({c.id: (c.name, dict(c.args)) for c in message.tool_calls})
        elif isinstance(message, UserMessage):
            for part in message.parts:
                if isinstance(part, ToolResultPart) and not part.is_error and part.call_id in calls:
                    name, args = calls[part.call_id]
                    found.append((name, args, part.content))
    return found


async def call_tool(t: Tool, args: dict[str, Any]) -> str:
    """Call a read-only tool as the loop would (validated, rendered; errors as text)."""
    try:
        return render_result(await t.call(t.validate(args), None), t.max_output_chars)
    except Exception as exc:
        return render_exception(t.name, exc)


def split_next_steps(text: str) -> tuple[str, list[str]]:
    """Split the model's text at "Next steps:" into the summary and the listed items."""
    found = re.search(r"(?im)^[#*\s]*next steps[*\s]*:?[*\s]*$|next steps:", text)
    if found is None:
        return text.strip(), []
    head = text[: found.start()].strip() or text.strip()
    lines = text[found.end() :].splitlines()
    items = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in lines]
    return head, [item for item in items if item][:8]


async def write_report(
    path: str | Path,
    content: str,
    *,
    workspace: str | Path | None = None,
    approve: ApprovalCallback | None = None,
) -> Path:
    """Write ``content`` to ``path`` with the files toolkit's ``write_file``. Overwriting a
    file and writing outside ``workspace`` (default: the working directory) need
    ``approve`` to say yes; without it they raise :class:`ReportNotWritten`."""
    from ...toolkits import files

    target, root = _resolve(path, workspace)
    if not target.is_relative_to(root):
        await _ask(
            approve, "write_outside_workspace", {"path": str(target), "workspace": str(root)}
        )
        root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportNotWritten(f"Cannot create the folder {str(root)!r}: {exc.strerror}.") from None
    write = next(t for t in files(root, approve_delete=True) if t.name == "write_file")
    args = write.validate({"path": target.relative_to(root).as_posix(), "content": content})
    approved = False
    if write.needs_approval(args):
        await _ask(approve, "write_file", {"path": str(target), "overwrite": True})
        approved = True
    ctx: ToolContext[None] = ToolContext(
        "recipe", "report", "write_file", 0, None, approved=approved
    )
    try:
        await write.call(args, ctx)
    except ModelRetry as exc:  # a directory, or a file where a directory should be
        raise ReportNotWritten(f"The report was not written: {exc.message}") from None
    return target


def check_out(path: str | Path) -> None:
    """Refuse, before any work, a report path that can never be a file."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"The report path {str(path)!r} is a directory; name a file in it.")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"The report path {str(path)!r} is inside a file, {str(parent)!r}.")


def _resolve(path: str | Path, workspace: str | Path | None) -> tuple[Path, Path]:
    return Path(path).resolve(), Path(workspace or Path.cwd()).resolve()


async def _ask(approve: ApprovalCallback | None, name: str, args: dict[str, Any]) -> None:
    what = f"{name} {args['path']}"
    if approve is None:
        raise ReportNotWritten(f"{what} needs approval and no approver was given (use --approve).")
    answer = approve(ApprovalRequest("recipe", name, name, args))
    if inspect.isawaitable(answer):
        answer = await answer
    if not isinstance(as_decision(answer), Approve):
        raise ReportNotWritten(f"{what} was not approved, so the report was not written.")


def _args(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def facts_json(facts: Any) -> str:
    """The report's facts as text, for checking a summary against them."""
    return json.dumps(facts, ensure_ascii=False, default=str)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (``|`` in cells escaped)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, sections: Sequence[tuple[str, str]], notes: Sequence[str]) -> str:
    """The Markdown report: a title, the sections, and how it was made."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip() or "(none)", ""]
    made = "\n".join(f"- {n}" for n in notes) or "- Every fact came from the model's tool calls."
    parts += ["## How this report was made", "", made, ""]
    return "\n".join(parts)


def bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items)
