"""``loopwise`` commands. ``run`` runs an agent on a task, showing its work on stderr.

Exit codes of ``run``: 0 completed, 1 failed, 2 usage error, 3 incomplete (a limit
stopped it), 4 input required (a call waits for approval), 130 interrupted.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from .. import __version__
from ..agent import Agent
from ..datadir import new_workspace
from ..errors import UsageError
from ..limits import Budget
from ..models import Model, infer_model
from ..result import RunResult
from .display import install_safe_streams, json_safe, print_answer, printable
from .toolsets import ApproveMode, TerminalApprover, build_tools, needs_workspace, parse_tool_specs

__all__ = ["EXIT_CODES", "RunOptions", "app", "load_agent", "main"]

EXIT_CODES = {
    "completed": 0,
    "failed": 1,
    "incomplete": 3,
    "input_required": 4,
    "cancelled": 130,
}
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="loopwise",
    help="Autonomous, tool-using LLM agents: run them, watch them, stop them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The ``run`` command's flags, gathered so helpers take one argument."""

    task: str
    model: str | None = None
    max_steps: int | None = None
    budget_usd: float | None = None
    budget_tokens: int | None = None
    timeout: float | None = None
    agent: str | None = None
    system: str | None = None
    json: bool = False
    verbose: bool = False
    tools: tuple[str, ...] = ()
    workspace: str | None = None
    allow_hosts: tuple[str, ...] = ()
    approve: ApproveMode | None = None
    attach: tuple[str, ...] = ()
    base_url: str | None = None
    mcp: tuple[str, ...] = ()
    mcp_config: tuple[str, ...] = ()
    continue_last: bool = False
    cid: str | None = None
    memory: bool = False

    def budget_overrides(self) -> dict[str, Any]:
        """The budget fields the flags set (only those given)."""
        fields = {
            "max_usd": self.budget_usd,
            "max_tokens": self.budget_tokens,
            "max_seconds": self.timeout,
        }
        return {k: v for k, v in fields.items() if v is not None}


@app.command()
def run(
    task: Annotated[
        str | None,
        typer.Argument(
            help="What the agent should do; - (or no TASK with stdin redirected) reads it "
            "from stdin.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="provider:model, e.g. anthropic:claude-sonnet-4-6.",
            show_default=False,
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="The server of an OpenAI-wire model (openai-compatible:, vllm:, llamacpp:, "
            "ollama:), e.g. http://127.0.0.1:8000/v1; default OPENAI_BASE_URL / OLLAMA_HOST.",
            show_default=False,
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Most model calls (default 25).", min=1, show_default=False)
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option(help="Most USD to spend.", min=0, show_default=False)
    ] = None,
    budget_tokens: Annotated[
        int | None,
        typer.Option(help="Most tokens (input + output) to use.", min=1, show_default=False),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Most seconds the run may take.", min=0, show_default=False),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="Your Agent to run, as module:attribute (flags override its settings).",
            show_default=False,
        ),
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="The system prompt.", show_default=False)
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print the result as one JSON object on stdout.", metavar=""),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Show the live view even with --json.", metavar=""),
    ] = False,
    continue_last: Annotated[
        bool,
        typer.Option(
            "--continue",
            "-c",
            help="Continue the last CLI conversation (same agent, tools and workspace).",
            metavar="",
        ),
    ] = False,
    cid: Annotated[
        str | None,
        typer.Option("--cid", help="Continue the conversation of this run id.", show_default=False),
    ] = None,
    memory: Annotated[
        bool,
        typer.Option(
            "--memory",
            help="Long-term memory: recall relevant memories at the start and store this "
            "run's summary at the end (off by default for CLI runs).",
            metavar="",
        ),
    ] = False,
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            "-t",
            metavar="SPEC",
            help="Built-in toolkits, comma-separated: files, http, git[=REPO], python, shell, "
            "scripts=DIR, system[=LOGDIR], documents, browser. python and shell run in the "
            "OS sandbox.",
            show_default=False,
        ),
    ] = None,
    workspace: Annotated[
        str | None,
        typer.Option(
            help="The directory the file, git and code tools work in "
            "(default: a new one under the data directory).",
            show_default=False,
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="HOST",
            help="An IP or network http_get may fetch although it is private, or a host "
            "name (naming any host restricts http_get to the named hosts); repeatable.",
            show_default=False,
        ),
    ] = None,
    attach: Annotated[
        list[str] | None,
        typer.Option(
            "--attach",
            metavar="FILE",
            help="An image (PNG, JPEG, GIF, WebP) or PDF to give the model with the task; "
            "repeatable.",
            show_default=False,
        ),
    ] = None,
    approve: Annotated[
        str | None,
        typer.Option(
            help="Calls that need approval: ask (on the terminal; the default when stdin "
            "is one), yes (approve all), no (deny all). Otherwise the run stops for input.",
            show_default=False,
        ),
    ] = None,
    mcp: Annotated[
        list[str] | None,
        typer.Option(
            "--mcp",
            metavar="SERVER",
            help="An MCP server's tools for the agent: a command ('npx -y "
            "@modelcontextprotocol/server-filesystem ./work') or an http(s):// URL; repeatable.",
            show_default=False,
        ),
    ] = None,
    mcp_config: Annotated[
        list[str] | None,
        typer.Option(
            "--mcp-config",
            metavar="FILE",
            help='MCP servers from a JSON file in the {"mcpServers": {...}} format; repeatable.',
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run an agent on TASK: the live view goes to stderr, the answer to stdout."""
    from .session import read_task, run_stored

    try:
        text = read_task(task, follow_up=continue_last or cid is not None)
    except UsageError as exc:
        _error(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    options = RunOptions(
        task=text,
        model=model,
        max_steps=max_steps,
        budget_usd=budget_usd,
        budget_tokens=budget_tokens,
        timeout=timeout,
        agent=agent,
        system=system,
        json=json_output,
        verbose=verbose,
        tools=tuple(tools or ()),
        workspace=workspace,
        allow_hosts=tuple(allow_host or ()),
        approve=_approve_mode(approve),
        attach=tuple(attach or ()),
        base_url=base_url,
        mcp=tuple(mcp or ()),
        mcp_config=tuple(mcp_config or ()),
        continue_last=continue_last,
        cid=cid,
        memory=memory,
    )
    raise typer.Exit(run_stored(options))


@app.command()
def version() -> None:
    """Print the version of loopwise."""
    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
            metavar="",
        ),
    ] = False,
) -> None:
    """Autonomous, tool-using LLM agents: run them, watch them, stop them."""


def _register_service_commands() -> None:
    """``serve``, ``worker``, ``runs ...`` and ``approve`` (their heavy imports wait until run)."""
    from .memory import memory_app
    from .resume import resume
    from .runs import approve, runs_app
    from .serve import serve, worker

    app.command()(serve)
    app.command()(worker)
    app.add_typer(runs_app)
    app.command()(approve)
    app.command()(resume)
    app.add_typer(memory_app)
    from .recipes import recipe_app

    app.add_typer(recipe_app)
    from .mcp import mcp_app

    app.add_typer(mcp_app)
    _register_daily_commands()


def _register_daily_commands() -> None:
    """``models``, ``keys ...``, ``config ...`` and ``chat``."""
    from .chat import chat
    from .config import config_app
    from .keys import keys_app
    from .models import models

    app.command()(models)
    app.command()(chat)
    app.add_typer(keys_app)
    app.add_typer(config_app)


_register_service_commands()


def main() -> None:
    """Entry point of the ``loopwise`` console script and ``python -m loopwise``."""
    install_safe_streams()  # no escape sequence from a model or a tool reaches the terminal
    app(prog_name="loopwise")


# -- run ---------------------------------------------------------------------------------


def run_command(options: RunOptions) -> int:
    """Run the task as ``options`` say, as a stored run; print the answer; the exit code."""
    from .session import run_stored

    return run_stored(options)


def _model(options: RunOptions) -> str | Model | None:
    """``--model``, pointed at ``--base-url`` when one is given."""
    if options.base_url is None:
        return options.model
    if options.model is None:
        raise UsageError("--base-url needs --model, e.g. --model openai-compatible:my-model.")
    return infer_model(options.model, base_url=options.base_url)


def _build_agent(options: RunOptions) -> Agent[Any, Any]:
    """The user's agent (a copy, with the flags applied) or a plain one with ``--tools``."""
    if options.agent is None:
        agent: Agent[Any, Any] = Agent(options.model)
    else:
        agent = copy.copy(load_agent(options.agent))
        agent.tools = dict(agent.tools)
    if options.max_steps is not None:
        agent.max_steps = options.max_steps
    if options.system is not None:
        agent.system = options.system
    for t in _tools(options):
        if t.name in agent.tools:
            raise UsageError(f"--tools adds {t.name!r}, but the agent already has a tool so named.")
        agent.tools[t.name] = t
    if options.mcp or options.mcp_config:
        from .mcp import mcp_servers

        agent.capabilities = [*agent.capabilities, *mcp_servers(options.mcp, options.mcp_config)]
    if options.memory and getattr(agent, "memory", None) is None:
        agent.capabilities = [*agent.capabilities, _cli_memory().capability()]
    if options.approve is not None:
        where = Path(options.workspace) if options.workspace else None
        agent.approve = TerminalApprover(options.approve, workspace=where)
    return agent


def _cli_memory() -> Any:
    """The memory of ``--memory``: the data directory's (or ``LOOPWISE_MEMORY_DATABASE``)
    with ``LOOPWISE_MEMORY_EMBEDDER`` (default local), as ``loopwise memory`` opens it."""
    try:
        from ..memory import Memory
        from ..memory.embed import embedder_from_spec
    except ImportError as exc:
        raise UsageError(f"--memory needs pip install 'loopwise[memory]' ({exc}).") from None
    database = os.environ.get("LOOPWISE_MEMORY_DATABASE") or None
    return Memory(database, embedder=embedder_from_spec(None), summarize="deterministic")


def _tools(options: RunOptions) -> list[Any]:
    specs = parse_tool_specs(options.tools)
    if not specs:
        return []
    workspace = None
    if needs_workspace(specs):
        if options.workspace is not None:
            workspace = Path(options.workspace).expanduser().resolve()
            if not workspace.is_dir():
                raise UsageError(f"--workspace {options.workspace!r} is not a directory.")
        else:
            workspace = new_workspace()
        _error(f"workspace: {workspace}")
    return build_tools(specs, workspace=workspace, allow_hosts=options.allow_hosts)


def _approve_mode(value: str | None) -> ApproveMode | None:
    if value is None:
        return "ask" if sys.stdin.isatty() else None
    if value not in ("ask", "yes", "no"):
        _error(f"error: --approve must be ask, yes or no, not {value!r}")
        raise typer.Exit(EXIT_USAGE)
    return cast(ApproveMode, value)


def _budget(agent: Agent[Any, Any], options: RunOptions) -> Budget | None:
    overrides = options.budget_overrides()
    return dataclasses.replace(agent.budget, **overrides) if overrides else None


def load_agent(spec: str) -> Agent[Any, Any]:
    """Import ``module:attribute`` and return the :class:`Agent` found there.

    The working directory is importable, as it is for ``python -m``. Raises
    :class:`UsageError` saying what is wrong when the spec does not lead to an Agent.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"--agent {spec!r} is not of the form module:attribute, for example "
            "myproject.agents:researcher."
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(
                f"--agent {spec!r}: there is no module {module_name!r}; check the "
                "name and that its directory is on PYTHONPATH."
            ) from None
        raise UsageError(f"--agent {spec!r}: importing {module_name!r} failed: {exc}.") from None
    except Exception as exc:
        raise UsageError(
            f"--agent {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    try:
        found = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise UsageError(
            f"--agent {spec!r}: module {module_name!r} has no attribute {attr!r}."
        ) from None
    if not isinstance(found, Agent):
        raise UsageError(f"--agent {spec!r} is a {type(found).__name__}, not a loopwise Agent.")
    return found


# -- output ------------------------------------------------------------------------------


def _report(result: RunResult[Any], options: RunOptions) -> None:
    """The answer (or the JSON summary) on stdout; why it did not complete on stderr."""
    summary = result.summary()
    if options.json:
        typer.echo(json_safe(json.dumps(summary, ensure_ascii=False)))
    elif result.status == "completed":
        output = summary["output"]
        if isinstance(output, str):
            print_answer(output)
        else:
            typer.echo(json_safe(json.dumps(output, indent=2, ensure_ascii=False)))
    match result.status:
        case "failed":
            _error(f"error: {result.error or result.stop_reason}")
        case "incomplete":
            detail = f": {result.detail}" if result.detail else ""
            _error(f"incomplete: stopped by {result.stop_reason}{detail}")
        case "input_required":
            pending = ", ".join(f"{p.call_id} ({p.tool_name})" for p in result.pending_approvals)
            _error(
                f"input required: approval is needed for {pending}; decide with loopwise "
                f"approve {result.run_id} CALL_ID [--reject], then loopwise resume {result.run_id}"
            )
        case "cancelled":
            _error("interrupted")
        case "completed":
            pass


def _error(message: str) -> None:
    """One line on stderr, control characters escaped."""
    typer.echo(printable(" ".join(message.split())), err=True)
