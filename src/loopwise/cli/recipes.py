"""``loopwise recipe NAME ...``: the ready recipes of :mod:`loopwise.agents.recipes`.

Each prints the live view of its runs on stderr and its result (status, summary,
artifacts, next steps) on stdout, as JSON with ``--json``. Overwriting a report and
writing outside the workspace ask on the terminal (``--approve ask``) unless
``--approve yes|no``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import LoopwiseError
from ..limits import Budget
from .display import json_safe, printable

if TYPE_CHECKING:
    from ..agents.recipes import RecipeResult

__all__ = ["recipe_app"]

recipe_app = typer.Typer(
    name="recipe",
    help="Ready recipes: dependency audit, repo health, incidents, research.",
    no_args_is_help=True,
)

Model = Annotated[str | None, typer.Option("--model", "-m", help="provider:model (default: env).")]
Approve = Annotated[str, typer.Option("--approve", help="ask | yes | no, for irreversible steps.")]
Tokens = Annotated[
    int | None, typer.Option("--budget-tokens", min=1, help="Tokens for the whole team.")
]
Usd = Annotated[float | None, typer.Option("--budget-usd", min=0.0, help="USD for the whole team.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Allow = Annotated[list[str] | None, typer.Option("--allow-host", help="Allow a private host/IP.")]


def _common(
    model: str | None, approve: str, tokens: int | None, usd: float | None
) -> dict[str, Any]:
    from .display import LiveDisplay
    from .toolsets import TerminalApprover

    if approve not in ("ask", "yes", "no"):
        raise typer.BadParameter(f"--approve must be ask, yes or no, not {approve!r}.")
    return {
        "model": model,
        "approve": TerminalApprover(approve),  # type: ignore[arg-type]
        "budget": Budget(max_tokens=tokens, max_usd=usd),
        "on_event": LiveDisplay().handle,
    }


def _run(make: Callable[[], Coroutine[Any, Any, RecipeResult]], as_json: bool) -> None:
    try:
        result = asyncio.run(make())
    except LoopwiseError as exc:
        typer.echo(printable(" ".join(f"error: {exc}".split())), err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json_safe(json.dumps(result.to_dict(), indent=2, default=str)))
    else:
        typer.echo(printable(f"{result.status}: {result.summary}"))
        for path in result.artifacts:
            typer.echo(printable(f"report: {path}"))
        for step in result.next_steps:
            typer.echo(printable(f"next: {step}"))
    raise typer.Exit(0 if result.status == "completed" else 1)


@recipe_app.command("dependency-audit")
def dependency_audit(
    requirements: Annotated[Path, typer.Option("--requirements", "-r")],
    pypi_url: Annotated[str, typer.Option("--pypi-url")] = "https://pypi.org",
    out: Annotated[Path, typer.Option("--out")] = Path("dependency-audit.md"),
    allow_host: Allow = None,
    model: Model = None,
    approve: Approve = "ask",
    budget_tokens: Tokens = None,
    budget_usd: Usd = None,
    as_json: Json = False,
) -> None:
    """Pinned versions against the latest on PyPI; majors behind; upgrade commands."""
    from ..agents.recipes.dependency_audit import dependency_audit as recipe

    opts = _common(model, approve, budget_tokens, budget_usd)
    _run(
        lambda: recipe(requirements, pypi_url=pypi_url, allow=allow_host or (), out=out, **opts),
        as_json,
    )


@recipe_app.command("repo-health")
def repo_health(
    repo: Annotated[Path, typer.Option("--repo")] = Path("."),
    days: Annotated[int, typer.Option("--days")] = 30,
    out: Annotated[Path, typer.Option("--out")] = Path("repo-health.md"),
    model: Model = None,
    approve: Approve = "ask",
    budget_tokens: Tokens = None,
    budget_usd: Usd = None,
    as_json: Json = False,
) -> None:
    """Commits per author, recently changed files, TODO/FIXME notes of a git repository."""
    from ..agents.recipes.repo_health import repo_health as recipe

    opts = _common(model, approve, budget_tokens, budget_usd)
    _run(lambda: recipe(repo, days=days, out=out, **opts), as_json)


@recipe_app.command("incident-report")
def incident_report(
    logs: Annotated[Path, typer.Option("--logs")],
    out_dir: Annotated[Path, typer.Option("--out-dir")] = Path("."),
    model: Model = None,
    approve: Approve = "ask",
    budget_tokens: Tokens = None,
    budget_usd: Usd = None,
    as_json: Json = False,
) -> None:
    """Recent errors and their patterns, memory and disk, a timeline; a timestamped report."""
    from ..agents.recipes.incident_report import incident_report as recipe

    opts = _common(model, approve, budget_tokens, budget_usd)
    _run(lambda: recipe(logs, out_dir=out_dir, **opts), as_json)


@recipe_app.command("research-write")
def research_write(
    topic: Annotated[str, typer.Option("--topic")],
    out: Annotated[Path, typer.Option("--out")],
    source: Annotated[list[str], typer.Option("--source", help="A URL or a file (repeat).")],
    rounds: Annotated[int, typer.Option("--rounds")] = 1,
    allow_host: Allow = None,
    model: Model = None,
    approve: Approve = "ask",
    budget_tokens: Tokens = None,
    budget_usd: Usd = None,
    as_json: Json = False,
) -> None:
    """Researcher → writer → reviewer → revision, from the given sources."""
    from ..agents.recipes.research_write import research_write as recipe

    opts = _common(model, approve, budget_tokens, budget_usd)
    _run(
        lambda: recipe(topic, out, sources=source, rounds=rounds, allow=allow_host or (), **opts),
        as_json,
    )
