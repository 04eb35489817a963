"""``loopwise chat``: an interactive session with an agent and its tools.

Each message is one stored run continuing the conversation (as ``loopwise run --cid``),
so ``loopwise runs list`` shows every turn and ``loopwise run -c`` picks up after the
chat. Input has line editing and history (``<data dir>/chat_history``) where the
``readline`` module exists; a line ending in ``\\`` continues on the next, and ``\"\"\"``
opens and closes a multi-line block. Approvals are asked inline. Ctrl-C during a turn
cancels that turn (the conversation goes on from the turn before); Ctrl-C at the prompt
clears the line; Ctrl-D or ``/exit`` ends the session.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import LoopwiseError, UsageError
from .display import printable

if TYPE_CHECKING:
    from .main import RunOptions

EXIT_USAGE = 2

__all__ = ["chat"]

HELP = """commands:
  /tools          the agent's tools
  /model [NAME]   show the model, or use NAME from the next message on
  /budget         the spend of this session and the limits of each turn
  /new            start a new conversation
  /help           this list
  /exit           end the session (or Ctrl-D)
  a line ending in \\ continues on the next; \"\"\" starts and ends a multi-line block"""


@dataclasses.dataclass
class ChatSession:
    """The options every turn runs with, the conversation so far and its spend."""

    options: RunOptions
    last_run: str | None = None
    turns: int = 0
    runs: list[str] = dataclasses.field(default_factory=list)

    def turn(self, text: str) -> None:
        from .session import run_turn

        options = dataclasses.replace(self.options, task=text, cid=self.last_run)
        code, run_id = run_turn(options, notice=self.turns == 0)
        self.turns += 1
        if run_id is not None:
            self.runs.append(run_id)
        if code in (0, 1, 3) and run_id is not None:
            self.last_run = run_id  # the conversation moves on; a cancelled turn does not
        elif code == 4 and run_id is not None:
            _error(f"the turn waits for approval; continue it with: loopwise resume {run_id}")


def _read_message(prompt: str) -> str | None:
    """One message from the user (None at end of input); continuation lines joined."""
    lines: list[str] = []
    block = False
    while True:
        line = input(prompt if not lines else "... ")
        if line.strip() == '"""':
            if block:
                return "\n".join(lines)
            block = True
            continue
        if block:
            lines.append(line)
        elif line.endswith("\\"):
            lines.append(line[:-1])
        else:
            lines.append(line)
            return "\n".join(lines)


def _command(session: ChatSession, text: str) -> bool:
    """Handle a ``/command``; False to end the session."""
    name, _, arg = text.strip().partition(" ")
    match name:
        case "/exit" | "/quit":
            return False
        case "/help":
            typer.echo(HELP, err=True)
        case "/tools":
            _show_tools(session.options)
        case "/model":
            if arg.strip():
                session.options = dataclasses.replace(session.options, model=arg.strip())
            shown = session.options.model or "the agent's or the default model"
            typer.echo(printable(f"model: {shown}"), err=True)
        case "/budget":
            _show_budget(session)
        case "/new":
            session.last_run = None
            typer.echo("a new conversation starts with the next message", err=True)
        case _:
            typer.echo(printable(f"unknown command {name}; /help lists them"), err=True)
    return True


def _error(message: str) -> None:
    typer.echo(printable(" ".join(message.split())), err=True)


def _show_tools(options: RunOptions) -> None:
    from .main import _build_agent

    try:
        agent = _build_agent(options)
    except LoopwiseError as exc:
        _error(f"error: {exc}")
        return
    if not agent.tools:
        typer.echo("no tools (add some with --tools files,http,...)", err=True)
    for name, found in sorted(agent.tools.items()):
        description = (getattr(found, "description", "") or "").strip().splitlines()
        first = description[0] if description else ""
        typer.echo(printable(f"  {name:<20} {first[:90]}"), err=True)


def _show_budget(session: ChatSession) -> None:
    from .store import open_store

    tokens_in = tokens_out = 0
    cost = 0.0
    try:
        store = open_store()
        try:
            for run_id in session.runs:
                row = store.row(run_id) or {}
                usage = row.get("usage") or {}
                tokens_in += int(usage.get("input_tokens", 0))
                tokens_out += int(usage.get("output_tokens", 0))
                cost += float(row.get("cost") or 0.0)
        finally:
            store.dispose()
    except Exception as exc:
        _error(f"error: the spend could not be read: {exc}")
        return
    spent = f" · ${cost:.4f}" if cost > 0 else ""
    o = session.options
    limits = ", ".join(
        f"{k} {v}"
        for k, v in (
            ("steps", o.max_steps),
            ("usd", o.budget_usd),
            ("tokens", o.budget_tokens),
            ("seconds", o.timeout),
        )
        if v is not None
    )
    typer.echo(
        f"this session: {session.turns} turns · {tokens_in:,} in / {tokens_out:,} out{spent}\n"
        f"each turn's limits: {limits or 'the agent defaults'}",
        err=True,
    )


def _history() -> Any:
    """Line editing and a history file, where ``readline`` is available."""
    try:
        import readline
    except ImportError:
        return None
    from ..datadir import data_dir

    path = data_dir(create=True) / "chat_history"
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)
    return readline, path


def _save_history(history: Any) -> None:
    if history is None:
        return
    readline, path = history
    try:
        readline.write_history_file(path)
        path.chmod(0o600)
    except OSError:
        pass


def chat(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="provider:model.", show_default=False)
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="Your Agent, as module:attribute.", show_default=False)
    ] = None,
    tools: Annotated[
        list[str] | None,
        typer.Option("--tools", "-t", help="Built-in toolkits, as for run.", metavar="SPEC"),
    ] = None,
    workspace: Annotated[
        str | None, typer.Option(help="The tools' directory.", show_default=False)
    ] = None,
    approve: Annotated[
        str | None, typer.Option(help="ask (default), yes or no.", show_default=False)
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Most model calls per turn.", min=1, show_default=False)
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option(help="Most USD per turn.", min=0, show_default=False)
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="The system prompt.", show_default=False)
    ] = None,
    cid: Annotated[
        str | None,
        typer.Option("--cid", help="Continue the conversation of this run.", show_default=False),
    ] = None,
) -> None:
    """Chat with an agent: each message is a stored run continuing the conversation."""
    from .main import RunOptions, _approve_mode

    if not sys.stdin.isatty():
        _error("error: loopwise chat needs a terminal; use loopwise run - for piped input.")
        raise typer.Exit(EXIT_USAGE)
    options = RunOptions(
        task="",
        model=model,
        agent=agent,
        tools=tuple(tools or ()),
        workspace=workspace,
        approve=_approve_mode(approve),
        max_steps=max_steps,
        budget_usd=budget_usd,
        system=system,
    )
    raise typer.Exit(_loop(ChatSession(options, last_run=cid)))


def _loop(session: ChatSession) -> int:
    history = _history()
    typer.echo("loopwise chat · /help for commands · Ctrl-D to leave", err=True)
    try:
        while True:
            try:
                text = _read_message("you> ")
            except KeyboardInterrupt:
                typer.echo("", err=True)
                continue
            except EOFError:
                typer.echo("", err=True)
                return 0
            if text is None or not text.strip():
                continue
            if text.startswith("/"):
                if not _command(session, text):
                    return 0
                continue
            try:
                session.turn(text)
            except KeyboardInterrupt:
                _error("interrupted")
            except UsageError as exc:
                _error(f"error: {exc}")
    finally:
        _save_history(history)
