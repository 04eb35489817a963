"""The embedded ``local`` provider against raw llama-cpp-python, same prompt and model, same run.

    .venv/bin/python bench/local.py [--threads 1] [--tokens 128] [--repeats 3] [--busy 0]
                                    [--model PATH] [--json]

For each thread count: time to first token and decode speed (tokens/s after the first) of a
streamed plain-chat completion at temperature 0, raw ``Llama.create_chat_completion`` and
``LocalModel.stream`` alternating. ``--busy N`` runs N CPU-burning processes meanwhile (the
machine a developer or CI has is rarely idle). Then one agent run of a few tool steps shows
how many prompt tokens llama.cpp evaluated at each step (the shared prefix is reused).
Needs ``pip install 'loopwise[local]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loopwise import Agent, tool
from loopwise.messages import UserMessage
from loopwise.models import ModelSettings
from loopwise.models import local as local_module
from loopwise.models.local import LocalModel

PROMPT = "Write a short paragraph about the sea."


def burn() -> None:
    while True:
        pass


@contextmanager
def busy(count: int) -> Iterator[None]:
    workers = [multiprocessing.Process(target=burn, daemon=True) for _ in range(count)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def raw_once(llama: Any, tokens: int) -> tuple[float, float]:
    """(seconds to the first token, tokens/s after it) for raw llama-cpp-python."""
    started = time.perf_counter()
    first = 0.0
    count = 0
    messages = [{"role": "user", "content": PROMPT}]
    for chunk in llama.create_chat_completion(
        messages=messages, max_tokens=tokens, temperature=0.0, stream=True
    ):
        if chunk["choices"][0].get("delta", {}).get("content"):
            count += 1
            first = first or time.perf_counter()
    return first - started, (count - 1) / (time.perf_counter() - first)


async def local_once(model: LocalModel, tokens: int) -> tuple[float, float]:
    """The same through ``LocalModel.stream`` (worker thread, lock, queue)."""
    settings = ModelSettings(max_tokens=tokens, temperature=0.0)
    started = time.perf_counter()
    first = 0.0
    count = 0
    async for item in model.stream([UserMessage.text(PROMPT)], [], settings):
        if isinstance(item, str):
            count += 1
            first = first or time.perf_counter()
    return first - started, (count - 1) / (time.perf_counter() - first)


def compare(threads: int, args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    model = LocalModel(args.model, threads=threads)
    started = time.perf_counter()
    raw = llama_cpp.Llama(
        model_path=str(model.path),
        n_ctx=model.context_window,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    load_seconds = time.perf_counter() - started
    asyncio.run(local_once(model, 8))  # load the shared copy outside the timings
    raw_once(raw, 8)
    raws, locals_ = [], []
    for _ in range(args.repeats):
        raws.append(raw_once(raw, args.tokens))
        locals_.append(asyncio.run(local_once(model, args.tokens)))
    row = {
        "threads": threads,
        "load_s": round(load_seconds, 3),
        "raw_ttft_ms": round(statistics.median(r[0] for r in raws) * 1000, 1),
        "local_ttft_ms": round(statistics.median(r[0] for r in locals_) * 1000, 1),
        "raw_tok_s": round(statistics.median(r[1] for r in raws), 1),
        "local_tok_s": round(statistics.median(r[1] for r in locals_), 1),
    }
    row["local_vs_raw"] = round(row["local_tok_s"] / row["raw_tok_s"], 3)
    local_module.unload()
    return row


def prompt_reuse(args: argparse.Namespace) -> list[int]:
    """Prompt tokens llama.cpp evaluated per step of one agent run with a tool."""

    @tool
    def lookup(key: str) -> str:
        """Look a key up in the table."""
        return f"The value of {key} is 42."

    model = LocalModel(args.model)
    shared = model._shared()
    evaluated: list[int] = []
    real_eval = shared.llama.eval

    def counting_eval(tokens: Any) -> None:
        evaluated.append(len(tokens))
        real_eval(tokens)

    shared.llama.eval = counting_eval
    per_step: list[int] = []
    real_request = model.request

    async def request(*a: Any, **k: Any) -> Any:
        evaluated.clear()
        reply = await real_request(*a, **k)
        per_step.append(sum(evaluated) - reply.usage.output_tokens)
        return reply

    model.request = request  # type: ignore[method-assign]
    settings = ModelSettings(max_tokens=40, temperature=0.0, tool_choice="required")
    agent = Agent(model, tools=[lookup], max_steps=4, settings=settings)
    agent.run_sync("Look up the keys alpha, beta, gamma and delta, one at a time.")
    shared.llama.eval = real_eval
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with busy(args.busy):
        rows = [compare(int(t), args) for t in args.threads.split(",")]
        reuse = prompt_reuse(args)
    if args.json:
        print(json.dumps({"busy": args.busy, "rows": rows, "prompt_tokens_per_step": reuse}))
        return
    print(f"busy processes: {args.busy}; {args.tokens} tokens, median of {args.repeats}")
    print("threads  load_s  ttft_ms raw/local   tok/s raw/local   local/raw")
    for r in rows:
        print(
            f"{r['threads']:>7}  {r['load_s']:>6}  {r['raw_ttft_ms']:>7}/{r['local_ttft_ms']:<7}"
            f"  {r['raw_tok_s']:>7}/{r['local_tok_s']:<7}  {r['local_vs_raw']}"
        )
    print(f"prompt tokens evaluated per agent step: {reuse}")


if __name__ == "__main__":
    main()
