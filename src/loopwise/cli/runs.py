"""``loopwise runs list|show|events|cancel|prune`` and ``loopwise approve``: runs from a shell.

With ``--url`` (or ``LOOPWISE_URL``) they talk to that server (key from ``--api-key`` /
``LOOPWISE_API_KEY``); without, they read and write the local store straight
(``--database``, default the data directory's SQLite, the one ``loopwise run`` records its
runs in and ``serve`` uses): see :mod:`loopwise.cli.local`. ``runs prune`` always works on
the database: retention is an operator's job, so the HTTP API offers no bulk delete. Text
from runs (model and tool output, arguments, errors) is printed with control characters
escaped.

Exit codes: 0 done, 1 the server refused or could not be reached (one line on stderr),
2 usage error.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from . import local
from .client import ApiClient, ApiError, SseEvent
from .display import json_safe, printable

__all__ = ["approve", "parse_age", "runs_app"]

EXIT_ERROR = 1
EXIT_USAGE = 2
T = TypeVar("T")

runs_app = typer.Typer(
    name="runs",
    help="Runs on a loopwise server: list, show, events, cancel; prune old ones.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="LOOPWISE_URL",
        help="A loopwise server, e.g. http://127.0.0.1:8000 (default: the local store).",
        show_default=False,
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="LOOPWISE_API_KEY", help="API key.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the run's JSON.", metavar="")]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="The local store without --url (default: the data directory's SQLite).",
        show_default=False,
    ),
]


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(printable(" ".join(f"error: {message}".split())), err=True)
    raise typer.Exit(code)


def _call(action: Callable[[], T]) -> T:
    """Run ``action``; a refusal or network failure becomes one line on stderr and exit 1."""
    try:
        return action()
    except ApiError as exc:
        _fail(exc.message)


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _dump(data: Any) -> None:
    typer.echo(json_safe(json.dumps(data, indent=2, ensure_ascii=False)))


def _echo(text: str) -> None:
    typer.echo(printable(text))


@runs_app.command("list")
def list_runs(
    status: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only runs of this agent.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Runs per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Page cursor from a previous list.")] = None,
    json_output: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    database: DatabaseOption = None,
) -> None:
    """List runs, newest first (CLI runs too, from the local store)."""
    if url is None:
        page = _call(
            lambda: local.list_page(
                database, status=status, agent=agent, limit=limit, cursor=cursor
            )
        )
    else:
        client = ApiClient(url, api_key)
        page = _call(
            lambda: client.request(
                "GET", "/v1/runs", status=status, agent=agent, limit=limit, cursor=cursor
            )
        )
    if json_output:
        _dump(page)
        return
    if not page["data"]:
        typer.echo("no runs", err=True)
    for run in page["data"]:
        _echo(
            f"{run['id']}  {run['status']:<14} {run['agent']:<16} "
            f"steps={run['steps']:<3} {_when(run['created_at'])}"
        )
    if page.get("next_cursor"):
        typer.echo(printable(f"more: loopwise runs list --cursor {page['next_cursor']}"), err=True)


@runs_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    json_output: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    database: DatabaseOption = None,
) -> None:
    """Show a run: status, result, spend, pending approvals."""
    if url is None:
        run = _call(lambda: local.get_run(database, run_id))
    else:
        client = ApiClient(url, api_key)
        run = _call(lambda: client.request("GET", f"/v1/runs/{_quote(run_id)}"))
    if json_output:
        _dump(run)
        return
    usage = run.get("usage") or {}
    lines = [
        f"id:        {run['id']}",
        f"agent:     {run['agent']}",
        f"status:    {run['status']}"
        + (f" ({run['stop_reason']})" if run.get("stop_reason") else ""),
        f"steps:     {run['steps']} model calls, {run['tool_calls']} tool calls",
        f"usage:     {usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out "
        f"tokens, ${run['cost_usd']:.4f}",
        f"created:   {_when(run['created_at'])}   finished: {_when(run.get('finished_at'))}",
    ]
    if run.get("error"):
        lines.append(f"error:     {run['error']}")
    for p in run.get("pending_approvals") or []:
        args = json.dumps(p["arguments"], ensure_ascii=False)
        lines.append(f"pending:   {p['call_id']}  {p['tool']} {args}")
        lines.append(f"           loopwise approve {run['id']} {p['call_id']} [--reject]")
    if run.get("output") is not None:
        output = run["output"]
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        lines.append(f"output:    {text}")
    _echo("\n".join(lines))


def _summary(event: SseEvent) -> str:
    """What one event says, in a line."""
    d = event.data
    match event.type:
        case "tool_call" | "approval_requested":
            return f"{d.get('name')} {json.dumps(d.get('args'), ensure_ascii=False)}"
        case "tool_result":
            n = d.get("images") or 0
            pictures = f" [{n} image{'s' if n > 1 else ''}]" if n else ""
            return f"{d.get('name')}: {str(d.get('content'))[:200]}{pictures}"
        case "model_text":
            return str(d.get("text"))[:500]
        case "model_response":
            return f"${d.get('cost_usd', 0):.4f} finish={d.get('finish_reason')}"
        case "run_finished":
            return f"{d.get('status')} {d.get('stop_reason') or ''} {d.get('error') or ''}"
        case _:
            return ""


@runs_app.command("events")
def events(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until the run ends.")
    ] = False,
    after: Annotated[int, typer.Option(min=0, help="Start after this event number.")] = 0,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON event per line.", metavar="")
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    database: DatabaseOption = None,
) -> None:
    """Print a run's events (with --follow, as they happen, until the run is over)."""

    def source() -> Any:
        if url is None:
            return local.run_events(database, run_id, after=after, follow=follow)
        return ApiClient(url, api_key).events(run_id, after=after, follow=follow)

    def show_all() -> None:
        depths: dict[str, int] = {}  # child runs (agents used as tools) are indented
        for event in source():
            if json_output:
                line = {"id": event.seq, "event": event.type, "data": event.data}
                typer.echo(json_safe(json.dumps(line, ensure_ascii=False)))
                continue
            owner = str(event.data.get("run_id") or run_id)
            if event.type == "run_started":
                depths[owner] = int(event.data.get("depth") or 0)
            indent = "│ " * depths.get(owner, 0)
            _echo(f"{event.seq:>5} {indent}{event.type:<19} {_summary(event)}".rstrip())

    _call(show_all)


@runs_app.command("cancel")
def cancel(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    url: UrlOption = None,
    api_key: KeyOption = None,
    database: DatabaseOption = None,
) -> None:
    """Cancel a run that has not finished (a CLI run stops within seconds)."""
    if url is None:
        run = _call(lambda: local.cancel_run(database, run_id))
    else:
        client = ApiClient(url, api_key)
        run = _call(lambda: client.request("POST", f"/v1/runs/{_quote(run_id)}/cancel"))
    _echo(f"{run['id']} {run['status']}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as seconds (ValueError otherwise)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not found:
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 90m, 45s or 2w")
    return float(found[1]) * _UNITS[found[2]]


@runs_app.command("prune")
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of finished runs to delete: 30d, 12h, 2w.")
    ],
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            help="Only this agent's runs (repeatable); CLI runs are 'cli' or module:attr.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete without asking.", metavar="")
    ] = False,
    database: Annotated[
        str | None,
        typer.Option(
            help="The database serve uses (default: the data directory's SQLite).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Delete finished runs (and their events) older than --older-than, from the database:
    says how many per agent first, and asks (or --yes)."""
    from .prune import prune_runs

    try:
        seconds = parse_age(older_than)
    except ValueError as exc:
        _fail(f"--older-than {exc}.", EXIT_USAGE)
    prune_runs(database, seconds, older_than, tuple(agent or ()), yes)


def approve(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    call_id: Annotated[str, typer.Argument(help="The pending tool call's id.")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject the call instead.")] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why (the model is told).", show_default=False)
    ] = None,
    arguments: Annotated[
        str | None,
        typer.Option(help="Edited arguments as a JSON object (approve only).", show_default=False),
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    database: DatabaseOption = None,
) -> None:
    """Approve (or --reject) a tool call a run is waiting on."""
    body: dict[str, Any] = {"decision": "reject" if reject else "approve"}
    if reason is not None:
        body["reason"] = reason
    if arguments is not None:
        if reject:
            _fail("--arguments goes with an approval, not with --reject.", EXIT_USAGE)
        try:
            body["arguments"] = json.loads(arguments)
        except ValueError as exc:
            _fail(f"--arguments is not valid JSON: {exc}.", EXIT_USAGE)
        if not isinstance(body["arguments"], dict):
            _fail('--arguments must be a JSON object, e.g. \'{"path": "a.txt"}\'.', EXIT_USAGE)
    if url is None:
        run = _call(
            lambda: local.decide(
                database,
                run_id,
                call_id,
                approve=not reject,
                arguments=body.get("arguments"),
                reason=reason,
            )
        )
    else:
        client = ApiClient(url, api_key)
        path = f"/v1/runs/{_quote(run_id)}/approvals/{_quote(call_id)}"
        run = _call(lambda: client.request("POST", path, body))
    verb = "rejected" if reject else "approved"
    _echo(f"{verb} {call_id}; run {run['id']} is {run['status']}{_next_step(run)}")


def _next_step(run: dict[str, Any]) -> str:
    """What to do next for a CLI run once its calls are decided."""
    if run.get("status") != "input_required":
        return ""
    decided = {d["call_id"] for d in run.get("decisions") or [] if isinstance(d, dict)}
    waiting = [
        p["call_id"] for p in run.get("pending_approvals") or [] if p["call_id"] not in decided
    ]
    if waiting:
        return f"; still undecided: {', '.join(waiting)}"
    return f"; continue it with: loopwise resume {run['id']}"
