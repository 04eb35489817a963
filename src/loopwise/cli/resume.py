"""``loopwise resume RUN``: continue a CLI run that stopped for approval (exit 4)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["resume"]


def resume(
    run_id: Annotated[str, typer.Argument(help="The stored run's id.")],
    approve: Annotated[
        str | None,
        typer.Option(
            help="Calls still undecided: ask (on a terminal), yes or no.", show_default=False
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.", metavar="")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="The live view even with --json.", metavar="")
    ] = False,
    database: Annotated[
        str | None,
        typer.Option(
            help="The run store (default: the data directory's SQLite).", show_default=False
        ),
    ] = None,
) -> None:
    """Resume a stored CLI run waiting for approval, with the decisions made by
    ``loopwise approve`` (calls left undecided are asked on a terminal)."""
    from .session import resume_command

    code = resume_command(
        run_id, approve=approve, json_output=json_output, verbose=verbose, database=database
    )
    raise typer.Exit(code)
