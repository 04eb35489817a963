"""``loopwise run`` as a stored run: start, continue a conversation (``-c``, ``--cid``) and
resume after approval (``loopwise resume RUN``), each recorded in the local store.

The flags a run started with are stored with it (``spec["options"]``), so a resumed or
continued run gets the same agent, tools and workspace unless new flags say otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from ..approval import ApprovalRequest, Approve
from ..datadir import new_workspace
from ..errors import LoopwiseError, UsageError
from ..events import ApprovalRequested, Event, ModelResponded, RunStarted, ToolResulted
from ..messages import Message
from ..result import RunResult
from ..state import RunState
from .display import LiveDisplay
from .main import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    RunOptions,
    _budget,
    _build_agent,
    _error,
    _model,
    _report,
)
from .store import RunRecorder, StoreError, claim_segment, is_cli_run, open_store
from .toolsets import TerminalApprover, needs_workspace, parse_tool_specs

__all__ = ["read_task", "resume_command", "run_stored", "run_turn"]

EXIT_NOT_FOUND = 1
_STORED_FIELDS = (
    "model", "max_steps", "budget_usd", "budget_tokens", "timeout", "agent", "system",
    "tools", "workspace", "allow_hosts", "base_url", "mcp", "mcp_config", "memory",
)  # fmt: skip
"""The flags kept with a run, so resuming or continuing it rebuilds the same agent."""
_FLUSH_AFTER = (RunStarted, ModelResponded, ToolResulted, ApprovalRequested)


class CliFailure(Exception):
    """A one-line error and the exit code that goes with it."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# -- the task ----------------------------------------------------------------------------


def read_task(task: str | None, *, follow_up: bool = False) -> str:
    """The task: the argument, or stdin for ``-`` or no argument with stdin not a terminal;
    an empty task is a usage error."""
    if task == "-" or (task is None and not sys.stdin.isatty()):
        task = sys.stdin.read().strip()
    if task is None:
        what = "a follow-up" if follow_up else "a task"
        raise UsageError(f'Give {what}: loopwise run "…", or on stdin (loopwise run - < task.md).')
    if not task.strip():
        raise UsageError("The task is empty; say what the agent should do.")
    return task


# -- run ---------------------------------------------------------------------------------


def run_stored(options: RunOptions) -> int:
    """Run ``options`` as a stored run (continuing a conversation when asked); the exit code."""
    return run_turn(options)[0]


def run_turn(options: RunOptions, *, notice: bool = True) -> tuple[int, str | None]:
    """:func:`run_stored`, also returning the stored run's id (None if none was made);
    ``notice=False`` leaves out the embedded-fallback notice (a chat says it once)."""
    store = None
    run_id: str | None = None
    recorder: RunRecorder | None = None
    try:
        store = _open_store_or_warn()
        messages: list[Message] | None = None
        if options.continue_last or options.cid:
            if store is None:
                raise UsageError("Continuing a conversation needs the run store, which failed.")
            options, messages = _conversation(store, options)
        options = _prepared(options)
        agent = _build_agent(options)
        if notice and options.model is None and getattr(agent, "model", None) is None:
            _fallback_notice()
        from ..media import attachment

        task: Any = options.task
        if options.attach:
            task = [options.task, *map(attachment, options.attach)]
        run_id = f"run_{uuid.uuid4().hex}"
        recorder = _record_new(store, run_id, options, messages)
        if recorder is None:
            run_id = None
        cancel = asyncio.Event()
        stream = agent.stream(
            task,
            model=_model(options),
            budget=_budget(agent, options),
            messages=messages,
            run_id=run_id or f"run_{uuid.uuid4().hex}",
            cancel=cancel,
        )
        return _finish(_drive_sync(stream, options, recorder, cancel), options), run_id
    except CliFailure as exc:
        _error(str(exc) if exc.code == EXIT_INTERRUPTED else f"error: {exc}")
        return exc.code, run_id
    except UsageError as exc:
        _error(f"error: {exc}")
        return EXIT_USAGE, run_id
    except LoopwiseError as exc:
        _error(f"error: {exc}")
        _end_failed(recorder, str(exc))
        return EXIT_CODES["failed"], run_id
    except Exception as exc:  # a provider's or a tool's own error: one line, no traceback
        message = f"{type(exc).__name__}: {exc}"
        _error(f"error: {message}")
        _end_failed(recorder, message)
        return EXIT_CODES["failed"], run_id
    finally:
        if store is not None:
            store.dispose()


def _end_failed(recorder: RunRecorder | None, message: str) -> None:
    """End the stored run as failed if the error came before it ended."""
    if recorder is None:
        return
    try:
        row = recorder.store.row(recorder.run_id)
        if row is not None and row["status"] in ("queued", "in_progress"):
            asyncio.run(recorder.fail(message))
    except Exception:  # the error itself is what the user needs to see
        pass


def _open_store_or_warn() -> Any:
    try:
        return open_store()
    except StoreError as exc:
        _error(f"warning: {exc}; this run is not recorded.")
        return None


def _record_new(
    store: Any, run_id: str, options: RunOptions, messages: list[Message] | None
) -> RunRecorder | None:
    if store is None:
        return None
    metadata = {"continues": options.cid} if messages is not None and options.cid else {}
    try:
        return RunRecorder.create(
            store,
            run_id,
            agent=options.agent or "cli",
            task=_task_text(options),
            model=options.model,
            options=stored_options(options),
            metadata=metadata,
        )
    except Exception as exc:  # a locked or broken database must not stop the run
        _error(f"warning: the run could not be recorded ({type(exc).__name__}: {exc}).")
        return None


def _task_text(options: RunOptions) -> str:
    names = " ".join(f"[{Path(a).name}]" for a in options.attach)
    return f"{options.task} {names}".strip()


def stored_options(options: RunOptions) -> dict[str, Any]:
    """The flags kept with the run (JSON data)."""
    data = {name: getattr(options, name) for name in _STORED_FIELDS}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def options_from(stored: Any, base: RunOptions) -> RunOptions:
    """``base`` with the stored flags filled in where ``base`` leaves them unset."""
    if not isinstance(stored, dict):
        return base
    changes: dict[str, Any] = {}
    for name in _STORED_FIELDS:
        value = stored.get(name)
        given = getattr(base, name)
        if value is None or not (given is None or given == () or given is False):
            continue
        changes[name] = tuple(str(v) for v in value) if isinstance(value, list) else value
    try:
        return dataclasses.replace(base, **changes)
    except TypeError as exc:
        raise UsageError(f"The stored flags of the run are malformed: {exc}.") from None


def _prepared(options: RunOptions) -> RunOptions:
    """The config file applied, stored keys exported, the workspace chosen."""
    from .config import apply_config
    from .keys import export_stored_keys

    options = apply_config(options)
    export_stored_keys()
    return _fixed_workspace(options)


def _fallback_notice() -> None:
    """Say on stderr when the embedded fallback model will answer (the models package
    says what to print)."""
    from .. import models as provided

    choose = getattr(provided, "choose_default_model", None)
    try:
        choice = choose() if choose is not None else None
    except LoopwiseError:
        return  # no model at all: the run says so in one line
    notice = getattr(choice, "notice", None) if choice is not None else None
    if isinstance(notice, str) and notice:
        _error(f"note: {notice}")


def _fixed_workspace(options: RunOptions) -> RunOptions:
    """Choose the workspace now (a new one if needed and not given), so it is stored."""
    if options.workspace is not None or not needs_workspace(parse_tool_specs(options.tools)):
        return options
    return dataclasses.replace(options, workspace=str(new_workspace()))


def _conversation(store: Any, options: RunOptions) -> tuple[RunOptions, list[Message]]:
    """The run to continue (``--cid`` or the newest CLI run) and its transcript."""
    from ..durable.state import messages_of

    row = _conversation_row(store, options.cid)
    if row["status"] in ("queued", "in_progress"):
        raise UsageError(f"Run {row['id']} is still {row['status']}; wait for it to end.")
    if row["status"] == "input_required":
        raise UsageError(
            f"Run {row['id']} waits for approval: decide with loopwise approve {row['id']} "
            f"CALL_ID, then loopwise resume {row['id']}."
        )
    saved = store.state(row["id"])
    if saved is None:
        raise UsageError(f"Run {row['id']} has no saved transcript to continue.")
    options = options_from(row["spec"].get("options"), dataclasses.replace(options, cid=row["id"]))
    return options, messages_of(saved)


def _conversation_row(store: Any, cid: str | None) -> dict[str, Any]:
    if cid is not None:
        row = store.row(cid)
        if row is None:
            raise CliFailure(f"no run has the id {cid!r}.", EXIT_NOT_FOUND)
        if not is_cli_run(row):
            raise UsageError(f"Run {cid} was started by the service, not the CLI.")
        return dict(row)
    cursor = None
    for _ in range(20):  # the newest CLI run among the last 1,000 runs
        page, cursor = store.list_runs(status=None, agent=None, limit=50, cursor=cursor)
        for record in page:
            row = store.row(record.id)
            if is_cli_run(row):
                return dict(row)
        if cursor is None:
            break
    raise UsageError("There is no earlier CLI run to continue; start one with loopwise run.")


# -- driving a stream ----------------------------------------------------------------------


def _drive_sync(
    stream: Any, options: RunOptions, recorder: RunRecorder | None, cancel: asyncio.Event
) -> RunResult[Any]:
    display = LiveDisplay() if options.verbose or not options.json else None
    try:
        return asyncio.run(_drive(stream, display, recorder, cancel))
    except KeyboardInterrupt:
        if recorder is not None:
            _mark_cancelled(recorder)
        raise CliFailure("interrupted", EXIT_INTERRUPTED) from None
    finally:
        if display is not None:
            display.close()


async def _drive(
    stream: Any, display: LiveDisplay | None, recorder: RunRecorder | None, cancel: asyncio.Event
) -> RunResult[Any]:
    if recorder is None:
        async for event in stream:
            if display is not None:
                display.handle(event)
        return stream.result  # type: ignore[no-any-return]
    async with recorder.heartbeat(cancel):
        try:
            async for event in stream:
                _show_and_add(event, display, recorder)
                if isinstance(event, _FLUSH_AFTER):
                    await recorder.flush()
        except Exception as exc:
            await recorder.fail(str(exc) if isinstance(exc, LoopwiseError) else repr(exc))
            raise
    result: RunResult[Any] = stream.result
    await recorder.end(result)
    if recorder.lost and result.status != "cancelled":
        _error(f"warning: run {recorder.run_id} was ended from outside; its record is not updated.")
    return result


def _show_and_add(event: Event, display: LiveDisplay | None, recorder: RunRecorder) -> None:
    if display is not None:
        display.handle(event)
    recorder.add(event)


def _mark_cancelled(recorder: RunRecorder) -> None:
    from ..durable.reconcile import final_event

    finished = partial(final_event, status="cancelled", stop_reason="cancelled", error=None)
    try:
        recorder.store.end(
            recorder.run_id, {"status": "cancelled", "stop_reason": "cancelled"}, finished
        )
    except Exception:  # the interrupt wins; the reconciler of a service ends it later
        pass


def _finish(result: RunResult[Any], options: RunOptions) -> int:
    _report(result, options)
    return EXIT_CODES[result.status]


# -- resume ------------------------------------------------------------------------------


def resume_command(
    run_id: str, *, approve: str | None, json_output: bool, verbose: bool, database: str | None
) -> int:
    """Continue a stored CLI run that stopped for approval; the exit code."""
    try:
        store = open_store(database)
    except StoreError as exc:
        _error(f"error: {exc}")
        return EXIT_CODES["failed"]
    try:
        return _resume(store, run_id, approve, json_output, verbose)
    except CliFailure as exc:
        _error(str(exc) if exc.code == EXIT_INTERRUPTED else f"error: {exc}")
        return exc.code
    except UsageError as exc:
        _error(f"error: {exc}")
        return EXIT_USAGE
    except LoopwiseError as exc:
        _error(f"error: {exc}")
        return EXIT_CODES["failed"]
    finally:
        store.dispose()


def _resume(store: Any, run_id: str, approve: str | None, json_output: bool, verbose: bool) -> int:
    from ..durable.state import run_state_of

    row = _paused_cli_run(store, run_id)
    segment = int(row["segment"])
    saved = store.state(run_id, segment)
    if saved is None:
        raise CliFailure(f"run {run_id} has no saved state to resume from.", EXIT_CODES["failed"])
    state = run_state_of(saved)
    base = RunOptions(task="", json=json_output, verbose=verbose)
    options = options_from(row["spec"].get("options"), base)
    _apply_decisions(store, state, run_id, segment)
    _decide_the_rest(store, row, state, approve, options.workspace)
    agent = _build_agent(options)
    if not claim_segment(store, run_id, segment):
        raise CliFailure(f"run {run_id} is already being resumed elsewhere.", EXIT_USAGE)
    recorder = RunRecorder(store, run_id, segment + 1, seq=store.last_seq(run_id))
    cancel = asyncio.Event()
    stream = agent.stream(
        state, model=_model(options), budget=_budget(agent, options), cancel=cancel
    )
    return _finish(_drive_sync(stream, options, recorder, cancel), options)


def _paused_cli_run(store: Any, run_id: str) -> dict[str, Any]:
    row = store.row(run_id)
    if row is None:
        raise CliFailure(f"no run has the id {run_id!r}.", EXIT_NOT_FOUND)
    if not is_cli_run(row):
        raise UsageError(
            f"Run {run_id} was started by the service; its workers continue it once every "
            f"pending call is decided (loopwise approve {run_id} CALL_ID)."
        )
    if row["status"] != "input_required":
        raise UsageError(
            f"Run {run_id} is {row['status']}; only a run waiting for approval can be resumed."
        )
    return dict(row)


def _apply_decisions(store: Any, state: RunState, run_id: str, segment: int) -> None:
    """The decisions ``loopwise approve`` stored for this pause, each checked against the
    call it names (run, pause, call id, tool and arguments)."""
    from ..durable.workflow import approval_digest

    made = stored_decisions(store, run_id, segment)
    for pending in state.undecided:
        decision = made.get(pending.call_id)
        if decision is None:
            continue
        digest = approval_digest(run_id, segment, pending.call_id, pending.tool, pending.args)
        if decision.get("digest") != digest:
            raise CliFailure(
                f"the decision on call {pending.call_id} of run {run_id} does not match the "
                "call it names; it is not used.",
                EXIT_CODES["failed"],
            )
        if decision.get("approve") is True:
            args = decision.get("arguments")
            state.approve(pending.call_id, args if isinstance(args, dict) else None)
        else:
            reason = decision.get("reason")
            state.reject(pending.call_id, reason if isinstance(reason, str) else "rejected")


def stored_decisions(store: Any, run_id: str, segment: int) -> dict[str, dict[str, Any]]:
    """The decisions recorded for one pause of a run, by call id."""
    import sqlalchemy as sa

    from ..durable.schema import decisions

    query = sa.select(decisions.c.call_id, decisions.c.decision).where(
        decisions.c.run_id == run_id, decisions.c.segment == segment
    )
    with store.engine.connect() as conn:
        rows = list(conn.execute(query))
    return {r.call_id: r.decision for r in rows if isinstance(r.decision, dict)}


def _decide_the_rest(
    store: Any, row: dict[str, Any], state: RunState, approve: str | None, workspace: str | None
) -> None:
    """Calls still undecided: asked on the terminal (or decided by ``--approve``) and
    recorded as ``loopwise approve`` records them, else an error naming them."""
    from .local import record_cli_decision

    undecided = state.undecided
    if not undecided:
        return
    mode = approve or ("ask" if sys.stdin.isatty() else None)
    if mode is None:
        ids = ", ".join(p.call_id for p in undecided)
        raise CliFailure(
            f"call {ids} of run {state.run_id} has no decision: loopwise approve "
            f"{state.run_id} CALL_ID [--reject], or resume on a terminal.",
            EXIT_CODES["input_required"],
        )
    if mode not in ("ask", "yes", "no"):
        raise UsageError(f"--approve must be ask, yes or no, not {mode!r}.")
    where = Path(workspace) if workspace else None
    approver = TerminalApprover(mode, workspace=where)  # type: ignore[arg-type]
    for p in undecided:
        request = ApprovalRequest(state.run_id, p.call_id, p.tool, dict(p.args), p.reason)
        decision = asyncio.run(approver(request))
        yes = isinstance(decision, Approve)
        reason = None if isinstance(decision, Approve) else decision.reason
        record_cli_decision(store, row, p.call_id, yes, None, reason)
        if isinstance(decision, Approve):
            state.approve(p.call_id, decision.arguments)
        else:
            state.reject(p.call_id, decision.reason)
