"""The CLI as a daily tool: every run stored, approve and resume later, continue a
conversation, the task from stdin. Each through the real ``loopwise`` command."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from cli_daily_support import Cli, agent, one_line, run_id_of
from figures import figure
from loopwise import __version__


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def paused(cli: Cli) -> str:
    """A careful run that stopped for approval (exit 4, no terminal); its id."""
    done = cli("run", "delete it", agent("careful"))
    assert done.returncode == 4, done.stderr
    return run_id_of(done)


# -- every run is stored -------------------------------------------------------------------


def test_a_cli_run_is_listed_shown_and_its_events_read(cli: Cli) -> None:
    done = cli("run", "hello", agent("echo"))
    assert done.returncode == 0 and done.stdout == "heard: hello\n", done.stderr
    run_id = run_id_of(done)
    listed = cli("runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout and "completed" in listed.stdout
    shown = cli("runs", "show", run_id)
    assert "status:    completed" in shown.stdout and "output:    heard: hello" in shown.stdout
    record = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert record["agent"] == "daily_agents:echo" and record["output"] == "heard: hello"
    events = [json.loads(x) for x in cli("runs", "events", run_id, "--json").stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    (spec,) = cli.query("select spec from loopwise_runs where id = ?", run_id)[0]
    assert json.loads(spec)["origin"] == "cli"


def test_a_failed_run_is_stored_as_failed(cli: Cli) -> None:
    done = cli("run", "x", "--agent=daily_agents:slow", "--timeout", "0.2")
    assert done.returncode == 3
    run_id = run_id_of(done)
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["status"] == "incomplete"


def test_unknown_run_is_one_line_exit_1(cli: Cli) -> None:
    for args in (("runs", "show"), ("runs", "events"), ("resume",)):
        args = (*args, "run_nope")
        assert "run_nope" in one_line(cli(*args), 1)


# -- approve later, resume -----------------------------------------------------------------


def test_stopped_for_approval_then_approved_and_resumed(cli: Cli) -> None:
    run_id = paused(cli)
    assert cli.executions() == []
    shown = cli("runs", "show", run_id).stdout
    assert "pending:   call_0_0  delete_file" in shown
    approved = cli("approve", run_id, "call_0_0")
    assert approved.returncode == 0, approved.stderr
    assert f"loopwise resume {run_id}" in approved.stdout
    resumed = cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "done: deleted /tmp/x\n"
    assert cli.executions() == ["/tmp/x"]
    record = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert record["status"] == "completed" and record["steps"] == 2
    lines = cli("runs", "events", run_id, "--json").stdout.splitlines()
    seqs = [json.loads(x)["id"] for x in lines]
    assert seqs == list(range(1, len(seqs) + 1))  # the resumed segment numbers on
    again = one_line(cli("resume", run_id), 2)
    assert "completed" in again and cli.executions() == ["/tmp/x"]


def test_rejected_call_is_not_run_and_the_model_is_told(cli: Cli) -> None:
    run_id = paused(cli)
    assert cli("approve", run_id, "call_0_0", "--reject", "--reason", "no").returncode == 0
    resumed = cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "rejected" in resumed.stdout.lower() or "no" in resumed.stdout
    assert cli.executions() == []


def _tamper_state(cli: Cli, run_id: str) -> None:
    rows = cli.query("select segment, state from loopwise_states where run_id = ?", run_id)
    segment, state = rows[-1]
    data = json.loads(state)
    data["state"]["pending"][0]["args"]["path"] = "/etc/passwd"
    with sqlite3.connect(cli.database) as conn:
        conn.execute(
            "update loopwise_states set state = ? where run_id = ? and segment = ?",
            (json.dumps(data), run_id, segment),
        )


def _forge_service_run(cli: Cli, run_id: str) -> str:
    """A copy of the paused run whose spec is the service's (origin only in metadata)."""
    forged = run_id + "f"
    with sqlite3.connect(cli.database) as conn:
        conn.execute(
            "insert into loopwise_runs select ? , agent, status, input, model, ?, output, "
            "stop_reason, detail, error, usage, cost, steps, tool_calls, pending, segment, "
            "metadata, null, created_at, updated_at, started_at, finished_at, principal, "
            "request_hash from loopwise_runs where id = ?",
            (forged, json.dumps({"agent": "careful", "metadata": {"origin": "cli"}}), run_id),
        )
    return forged


def test_approval_binding_attacks(cli: Cli) -> None:
    """Class 8 through the CLI: no gated call runs without a matching decision."""
    held = 0
    attacks = 0

    def attempt(name: str, done: object, ok: bool) -> None:
        nonlocal held, attacks
        attacks += 1
        assert ok, (name, done)
        held += 1

    # 1. no decision, no terminal: resume refuses (exit 4), nothing runs
    run_id = paused(cli)
    done = cli("resume", run_id)
    attempt("undecided", done, done.returncode == 4 and "call_0_0" in done.stderr)
    # 2. a decision for another call id
    done = cli("approve", run_id, "call_9_9")
    attempt("other call", done, done.returncode == 1 and "not waiting" in done.stderr)
    # 3. arguments changed after approval (the saved state tampered): refused
    cli("approve", run_id, "call_0_0")
    _tamper_state(cli, run_id)
    done = cli("resume", run_id)
    attempt("changed args", done, done.returncode == 1 and "does not match" in done.stderr)
    # 4. the same call decided twice
    done = cli("approve", run_id, "call_0_0", "--reject")
    attempt("twice", done, done.returncode == 1 and "already decided" in done.stderr)
    # 5. a service run (origin claimed only in its metadata) is not resumed by the CLI
    forged = _forge_service_run(cli, run_id)
    done = cli("resume", forged)
    attempt("forged origin", done, done.returncode == 2 and "service" in done.stderr)
    # 6. two resumes at once: exactly one runs the call
    second = paused(cli)
    cli("approve", second, "call_0_0")
    procs = [cli.start("resume", second) for _ in range(3)]
    codes = sorted(p.wait(timeout=60) for p in procs)
    attempt("concurrent", codes, codes.count(0) == 1 and cli.executions() == ["/tmp/x"])
    # 7. a finished run cannot be approved again
    done = cli("approve", second, "call_0_0")
    attempt("finished", done, done.returncode == 1 and "not waiting" in done.stderr)
    assert cli.executions() == ["/tmp/x"]
    bypasses = attacks - held
    figure(f"CLI approval binding (approve + resume): {attacks} variants, bypasses {bypasses}")


def test_approve_yes_on_resume_decides_the_rest(cli: Cli) -> None:
    run_id = paused(cli)
    done = cli("resume", run_id, "--approve", "yes")
    assert done.returncode == 0 and done.stdout == "done: deleted /tmp/x\n", done.stderr
    record = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert [(d["call_id"], d["approve"]) for d in record["decisions"]] == [("call_0_0", True)]


@pytest.mark.slow
def test_a_running_cli_run_cancelled_from_outside_stops(cli: Cli) -> None:
    proc = cli.start("run", "wait", "--agent=daily_agents:slow")
    deadline = time.monotonic() + 30
    rows: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        if cli.database.exists():
            rows = cli.query("select id, status from loopwise_runs")
            if rows and rows[0][1] == "in_progress":
                break
        time.sleep(0.2)
    assert rows, "the run was never recorded"
    cancelled = cli("runs", "cancel", rows[0][0])
    assert cancelled.stdout.strip() == f"{rows[0][0]} cancelled", cancelled.stderr
    started = time.monotonic()
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - started < 15
    figure(f"CLI run cancelled from outside: stopped in {time.monotonic() - started:.1f}s")


# -- conversations ---------------------------------------------------------------------------


def test_continue_the_last_conversation_and_a_given_one(cli: Cli) -> None:
    first = cli("run", "hello", agent("echo"))
    assert first.stdout == "heard: hello\n"
    follow = cli("run", "-c", "again")  # the agent is the stored one
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout == "heard: hello | again\n"
    other = cli("run", "fresh", agent("echo"))
    given = cli("run", "--cid", run_id_of(first), "more")
    assert given.stdout == "heard: hello | more\n", given.stderr
    last = cli("run", "-c", "and")
    assert last.stdout == "heard: hello | more | and\n"
    assert run_id_of(other) != run_id_of(last)


def test_continue_refusals(cli: Cli) -> None:
    assert "no earlier CLI run" in one_line(cli("run", "-c", "x"), 2)
    assert "run_nope" in one_line(cli("run", "--cid", "run_nope", "x"), 1)
    run_id = paused(cli)
    assert f"loopwise approve {run_id}" in one_line(cli("run", "-c", "x"), 2)


# -- the task ----------------------------------------------------------------------------------


def test_task_from_stdin(cli: Cli) -> None:
    piped = cli("run", "-", agent("echo"), input="from a pipe\n")
    assert piped.stdout == "heard: from a pipe\n", piped.stderr
    redirected = cli("run", agent("echo"), input="# Task\nfrom a file\n")
    assert redirected.stdout == "heard: # Task\nfrom a file\n", redirected.stderr


@pytest.mark.parametrize("task", ["", "   ", "\n\n", "\t"])
def test_empty_task_is_refused(cli: Cli, task: str) -> None:
    assert "empty" in one_line(cli("run", task, agent("echo")), 2)
    assert "empty" in one_line(cli("run", "-", agent("echo"), input=task), 2)
    if cli.database.exists():
        assert cli.query("select count(*) from loopwise_runs")[0][0] == 0


def test_version_flag_and_flags_without_a_metavar(cli: Cli) -> None:
    assert cli("--version").stdout.strip() == __version__
    shown = cli("run", "--help", COLUMNS="160").stdout
    ours = [x for x in shown.splitlines() if any(f in x for f in ("--json", "--verbose", "-c "))]
    assert len(ours) == 3 and not any("<bool>" in x for x in ours), ours


# -- prune ---------------------------------------------------------------------------------


def test_prune_says_what_it_would_delete_asks_and_is_scoped(cli: Cli) -> None:
    cli("run", "a", agent("echo"))
    cli("run", "b", agent("echo"))
    cli("run", "c", "--agent=daily_agents:slow", "--timeout", "0.2")
    waiting = paused(cli)

    def ids() -> set[str]:
        return {row[0] for row in cli.query("select id from loopwise_runs")}

    before = ids()
    asked = cli("runs", "prune", "--older-than", "0s")  # no terminal, no --yes
    assert asked.returncode == 2 and "--yes" in asked.stderr
    assert "daily_agents:echo 2" in asked.stderr and "daily_agents:slow 1" in asked.stderr
    assert ids() == before
    scoped = cli("runs", "prune", "--older-than", "0s", "--agent", "daily_agents:echo", "--yes")
    assert scoped.returncode == 0 and "deleted 2 runs" in scoped.stdout, scoped.stderr
    left = ids()
    assert len(left) == 2 and waiting in left  # the other agent's run, and the paused one
    rest = cli("runs", "prune", "--older-than", "0s", "-y")
    assert "deleted 1 run " in rest.stdout and ids() == {waiting}  # never a paused run
    none = cli("runs", "prune", "--older-than", "0s", "--agent", "nobody", "--yes")
    assert none.stdout.startswith("deleted 0 runs")
