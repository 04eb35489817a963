"""Agents to serve over HTTP: ``loopwise serve`` loads this module and runs them durably.

``loopwise serve --agents MODULE`` registers every module-level Agent (or, as here, the
``agents`` dict) and serves the API under /v1 with in-process workers on a SQLite file in
the data directory. FunctionModels play the model's part, so the service runs offline;
give an agent ``"anthropic:claude-sonnet-4-6"`` instead and nothing else changes.

    cd examples && loopwise serve --agents service_agents        # or PYTHONPATH=examples

    KEY=$(cat "${LOOPWISE_DATA_DIR:-$HOME/.local/share/loopwise}/local_api_key")
    curl -s -X POST http://127.0.0.1:8000/v1/runs -H 'Content-Type: application/json' \\
         -H "Authorization: Bearer $KEY" \\
         -d '{"agent": "calculator", "input": "What is 6 times 7?"}'
    loopwise runs events RUN --follow           # RUN: the "id" the POST returned
    loopwise runs show RUN

    curl -s -X POST http://127.0.0.1:8000/v1/runs -H 'Content-Type: application/json' \\
         -H "Authorization: Bearer $KEY" -d '{"agent": "refunds", "input": "Refund order 1042."}'
    loopwise runs show RUN                      # input_required, with the pending call
    loopwise approve RUN CALL                   # or --reject --reason "..."

On loopback ``serve`` makes an admin key once and keeps it in ``<data dir>/local_api_key``
(the CLI reads it by itself); ``--no-auth`` serves without keys, on loopback only.

Agents: ``echo`` (answers with the task), ``calculator`` (adds or multiplies the numbers
in the task with tools) and ``refunds`` (a refund that waits for a human's approval).
"""

from __future__ import annotations

import re
from typing import Any

from loopwise import Agent, Message, TextPart, ToolResultPart, UserMessage, tool
from loopwise.models.testing import FunctionModel, Turn, call


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@tool
def order_total(order: int) -> float:
    """How much an order cost (read-only).

    Args:
        order: The order number.
    """
    return round(9.99 + order % 50, 2)


@tool(requires_approval=True, idempotent=False)
def issue_refund(order: int, amount: float) -> str:
    """Refund an order (a human approves it first; never issued twice).

    Args:
        order: The order number.
        amount: The amount to refund, in dollars.
    """
    return f"Refunded ${amount:.2f} for order {order}."


def task(messages: list[Message]) -> str:
    """The text of the first user message: the run's input."""
    first = next(m for m in messages if isinstance(m, UserMessage))
    return "".join(p.text for p in first.parts if isinstance(p, TextPart))


def observations(messages: list[Message]) -> list[ToolResultPart]:
    return [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]


# Each stand-in brain decides only from the conversation, so a replayed run agrees with it.


def echo_brain(messages: list[Message], tools: object) -> Turn:
    return f"You said: {task(messages)}"


def calculator_brain(messages: list[Message], tools: object) -> Turn:
    seen = observations(messages)
    if not seen:
        text = task(messages)
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]
        if len(numbers) != 2:
            return "Give me exactly two numbers, e.g. 'What is 6 times 7?'."
        op = "multiply" if re.search(r"times|\*|product|multipl", text) else "add"
        return call(op, a=numbers[0], b=numbers[1])
    return f"The answer is {float(seen[-1].content):g}."


def refunds_brain(messages: list[Message], tools: object) -> Turn:
    seen = observations(messages)
    if not seen:
        found = re.search(r"\d+", task(messages))
        if found is None:
            return "Which order? Give me its number."
        return call("order_total", order=int(found[0]))
    if len(seen) == 1:
        order = int(re.findall(r"\d+", task(messages))[0])
        return call("issue_refund", order=order, amount=float(seen[0].content))
    if seen[-1].is_error:
        return f"No refund: {seen[-1].content}"
    return seen[-1].content


agents: dict[str, Agent[Any, Any]] = {
    "echo": Agent(FunctionModel(echo_brain), name="echo", system="Repeat the task."),
    "calculator": Agent(
        FunctionModel(calculator_brain),
        tools=[add, multiply],
        name="calculator",
        system="Use the tools to do arithmetic.",
    ),
    "refunds": Agent(
        FunctionModel(refunds_brain),
        tools=[order_total, issue_refund],
        name="refunds",
        system="Refund orders; a human approves each refund.",
    ),
}
