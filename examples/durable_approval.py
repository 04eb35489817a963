"""Durable runs with a human in the loop: a run waits for approval, then finishes.

The agent looks up a customer's balance (a read tool), then wants to send an invoice, a
tool with side effects marked ``requires_approval=True, idempotent=False``. The durable
engine runs it as a DBOS workflow on SQLite: every model and tool call is a checkpointed
step, and the run parks in ``input_required`` with the pending call saved in the database.
Here the "human" approves it from the same script; in a service that would be
``loopwise approve RUN CALL`` or ``POST /v1/runs/RUN/approvals/CALL``, minutes or days
later, from another process. A FunctionModel plays the model's part, so it runs offline.

Needs the ``durable`` extra (``pip install 'loopwise[durable]'``).

    python examples/durable_approval.py [FOLDER]

FOLDER keeps the database (``FOLDER/runs.sqlite``); by default a temporary folder is used.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from loopwise import Agent, Message, ToolResultPart, UserMessage, tool
from loopwise.durable import TERMINAL, DurableEngine, RunRecord
from loopwise.models.testing import FunctionModel, Turn, call

BALANCES = {"ACME Corp": 1250.0, "Globex": 0.0}


@tool
def outstanding_balance(customer: str) -> float:
    """Look up how much a customer owes (read-only).

    Args:
        customer: The customer's name.
    """
    return BALANCES.get(customer, 0.0)


@tool(requires_approval=True, idempotent=False)
def send_invoice(customer: str, amount: float) -> str:
    """Send an invoice to a customer (a human must approve it; never sent twice).

    Args:
        customer: The customer's name.
        amount: The amount to bill, in dollars.
    """
    return f"Invoice INV-1001 for ${amount:,.2f} sent to {customer}."


def observations(messages: list[Message]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


def billing_brain(messages: list[Message], tools: object) -> Turn:
    """A stand-in for an LLM: decides only from the conversation, so a replay agrees."""
    seen = observations(messages)
    if not seen:
        return [
            "First I check what ACME Corp owes.",
            call("outstanding_balance", customer="ACME Corp"),
        ]
    if len(seen) == 1:
        amount = float(seen[0].content)
        return [
            f"They owe ${amount:,.2f}; I will invoice them.",
            call("send_invoice", customer="ACME Corp", amount=amount),
        ]
    if seen[-1].is_error:
        return f"I did not send the invoice: {seen[-1].content}"
    return f"Done: {seen[-1].content}"


billing = Agent(
    FunctionModel(billing_brain),
    tools=[outstanding_balance, send_invoice],
    name="billing",
    system="You bill customers for what they owe.",
)


async def wait_for(engine: DurableEngine, run_id: str, states: set[str]) -> RunRecord:
    """Poll the run until it is in one of ``states`` (at most 30 seconds)."""
    deadline = time.monotonic() + 30
    while True:
        run = await engine.get(run_id)
        if run.status in states:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is still {run.status}")
        await asyncio.sleep(0.05)


async def main(folder: Path) -> None:
    database = f"sqlite:///{folder / 'runs.sqlite'}"
    async with DurableEngine({"billing": billing}, database=database, poll_seconds=0.05) as engine:
        run = await engine.submit("billing", "Invoice ACME Corp for their outstanding balance.")
        print(f"submitted {run.id} ({run.status})")

        paused = await wait_for(engine, run.id, {"input_required", *TERMINAL})
        print(f"status: {paused.status}")
        for pending in paused.pending_approvals:
            print(
                f"waiting for approval: {pending.call_id} "
                f"{pending.tool}({json.dumps(pending.arguments, sort_keys=True)})"
            )
            await engine.decide(run.id, pending.call_id, approve=True, reason="Looks right.")
            print(f"approved {pending.call_id}")

        done = await wait_for(engine, run.id, set(TERMINAL))
        print(f"status: {done.status}")
        print(f"output: {done.output}")
        print(f"steps: {done.steps}, tool calls: {done.tool_calls}")
        # The run's events, numbered in order: the segment before the approval ends with a
        # run_finished saying input_required, the one after it with the final status.
        events = await engine.events(run.id)
        print("events: " + " ".join(e.type for e in events))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(Path(tmp)))
