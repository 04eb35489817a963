"""Real HTTP servers on 127.0.0.1 that speak the Anthropic and OpenAI wire formats.

A :class:`WireServer` answers ``POST /v1/messages`` (Anthropic Messages API) and
``POST /v1/chat/completions`` (OpenAI chat completions), as JSON or as a server-sent event
stream when the request body has ``"stream": true``. Each request takes the next scripted
:class:`Reply` (or calls a function of the request) and is recorded, so a test can assert
exactly what went on the wire. Use it with the real SDK clients::

    with WireServer() as server:
        server.push(Reply(text="hello"))
        model = AnthropicModel("claude-x", base_url=server.url, api_key="test")
        ...
        assert server.requests[0].body["model"] == "claude-x"

``server.url`` is the Anthropic base URL; ``server.openai_url`` (``.../v1``) the OpenAI one.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "WireServer",
    "error_reply",
    "wire_server",
]


@dataclass(frozen=True)
class ToolCall:
    """A scripted tool call; ``args`` as a string is sent verbatim (for invalid JSON)."""

    name: str
    args: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None  # None: the server makes one; "" sends no id at all (OpenAI)


@dataclass(frozen=True)
class Reply:
    """One scripted response: text and tool calls, or an error when ``status`` is not 200.

    ``stop_reason`` is the wire's own word (``end_turn``/``stop``...); by default it follows
    from the content. ``chunks`` splits the streamed text (default: word by word).
    ``stream_error`` streams the text, then an error event instead of the end.
    ``gate``: when streaming, the server sends the first text delta and then waits for this
    event before sending the rest; it proves the client sees deltas as they arrive.
    Garbage (OpenAI wire): ``content_type`` labels a ``raw_body``; ``truncate`` streams the
    text and tool calls, then closes the connection with no finish reason and no ``[DONE]``;
    ``raw_events`` streams these SSE ``data:`` payloads verbatim instead of the reply.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 10
    output_tokens: int = 5
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    stop_reason: str | None = None
    chunks: tuple[str, ...] | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    error_message: str = "scripted error"
    error_type: str | None = None
    raw_body: str | None = None
    stream_error: str | None = None
    gate: threading.Event | None = None
    model: str | None = None
    content_type: str = "application/json"
    truncate: bool = False
    raw_events: tuple[str, ...] | None = None


def error_reply(
    status: int, message: str = "scripted error", headers: Mapping[str, str] | None = None
) -> Reply:
    """An HTTP error with the wire's usual JSON error body."""
    return Reply(status=status, error_message=message, headers=dict(headers or {}))


@dataclass(frozen=True)
class RecordedRequest:
    """What the server received: path, headers (lower-case names) and the decoded JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


Script = Reply | Callable[[RecordedRequest], Reply]

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _pieces(text: str, size: int = 5) -> list[str]:
    """Tool-call argument text in several pieces, as providers stream it."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _args_text(call: ToolCall) -> str:
    return call.args if isinstance(call.args, str) else json.dumps(call.args)


class WireServer:
    """A scripted Anthropic + OpenAI wire server on 127.0.0.1 in a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Script] = deque()
        self.requests: list[RecordedRequest] = []
        self.reject_stream_options = False
        self.default: Script | None = None
        self._ids = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for the Anthropic SDK (it appends ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """Base URL for the OpenAI SDK (it appends ``/chat/completions``)."""
        return f"{self.url}/v1"

    def push(self, *replies: Script) -> WireServer:
        """Queue replies (or functions of the request) for the next requests, in order."""
        with self._lock:
            self._script.extend(replies)
        return self

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    def start(self) -> WireServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}{self._ids:04d}"

    def _next(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            script = self._script.popleft() if self._script else self.default
        if script is None:
            n = len(self.requests)
            return error_reply(400, f"wire server: no scripted reply left for request {n}")
        return script(request) if callable(script) else script


def _make_handler(server: WireServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        wire = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    wire: WireServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body: Any = json.loads(raw or b"null")
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest("POST", self.path, headers, body)
        if self.path.rstrip("/").endswith("/chat/completions"):
            openai = True
        elif self.path.rstrip("/").endswith("/v1/messages"):
            openai = False
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}}, {})
            return
        stream = isinstance(body, dict) and body.get("stream") is True
        if openai and stream and self.wire.reject_stream_options and "stream_options" in body:
            with self.wire._lock:
                self.wire.requests.append(request)
            message = "Unrecognized request argument supplied: stream_options"
            self._json(400, _openai_error(message, "invalid_request_error"), {})
            return
        reply = self.wire._next(request)
        model = reply.model or (body.get("model") if isinstance(body, dict) else None) or "m"
        if reply.status != 200 or reply.raw_body is not None:
            self._error(reply, openai)
        elif openai:
            self._openai(reply, model, stream, body)
        else:
            self._anthropic(reply, model, stream)

    # -- plumbing -------------------------------------------------------------------------

    def _json(
        self,
        status: int,
        payload: Any,
        headers: Mapping[str, str],
        content_type: str = "application/json",
    ) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self, headers: Mapping[str, str]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _sse(self, data: Any, event: str | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        self.wfile.write(f"{prefix}data: {text}\n\n".encode())
        self.wfile.flush()

    def _event(self, payload: dict[str, Any]) -> None:
        """An Anthropic stream event: the SSE event name repeats the payload's type."""
        self._sse(payload, str(payload["type"]))

    def _error(self, reply: Reply, openai: bool) -> None:
        if reply.raw_body is not None:
            self._json(reply.status, reply.raw_body, reply.headers, reply.content_type)
            return
        if openai:
            kind = reply.error_type or ("rate_limit_error" if reply.status == 429 else "error")
            self._json(reply.status, _openai_error(reply.error_message, kind), reply.headers)
            return
        kind = reply.error_type or _ANTHROPIC_ERROR_TYPES.get(reply.status, "api_error")
        payload = {
            "type": "error",
            "error": {"type": kind, "message": reply.error_message},
            "request_id": "req_test",
        }
        self._json(reply.status, payload, reply.headers)

    def _text_chunks(self, reply: Reply) -> list[str]:
        return list(reply.chunks) if reply.chunks is not None else _words(reply.text)

    def _wait_gate(self, reply: Reply, sent: int) -> None:
        if reply.gate is not None and sent == 1:
            reply.gate.wait(timeout=10)

    # -- Anthropic ------------------------------------------------------------------------

    def _anthropic_usage(self, reply: Reply) -> dict[str, int]:
        return {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
        }

    def _anthropic_calls(self, reply: Reply) -> list[tuple[str, ToolCall]]:
        return [(c.id or self.wire.next_id("toolu_"), c) for c in reply.tool_calls]

    def _anthropic(self, reply: Reply, model: str, stream: bool) -> None:
        stop = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
        calls = self._anthropic_calls(reply)
        message: dict[str, Any] = {
            "id": self.wire.next_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._anthropic_usage(reply),
        }
        if stream:
            self._anthropic_stream(reply, message, calls, stop)
            return
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
        for call_id, call in calls:
            content.append(
                {"type": "tool_use", "id": call_id, "name": call.name, "input": call.args}
            )
        self._json(200, {**message, "content": content, "stop_reason": stop}, reply.headers)

    def _anthropic_stream(
        self, reply: Reply, message: dict[str, Any], calls: list[tuple[str, ToolCall]], stop: str
    ) -> None:
        self._start_sse(reply.headers)
        start_usage = {**message["usage"], "output_tokens": 1}
        self._event({"type": "message_start", "message": {**message, "usage": start_usage}})
        index = 0
        if reply.text or reply.stream_error:
            block = {"type": "text", "text": ""}
            self._event({"type": "content_block_start", "index": 0, "content_block": block})
            self._event({"type": "ping"})
            for sent, chunk in enumerate(self._text_chunks(reply), start=1):
                delta = {"type": "text_delta", "text": chunk}
                self._event({"type": "content_block_delta", "index": 0, "delta": delta})
                self._wait_gate(reply, sent)
            if reply.stream_error:
                error = {"type": "overloaded_error", "message": reply.stream_error}
                self._event({"type": "error", "error": error})
                return
            self._event({"type": "content_block_stop", "index": 0})
            index = 1
        for offset, (call_id, call) in enumerate(calls):
            i = index + offset
            block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            self._event({"type": "content_block_start", "index": i, "content_block": block})
            for piece in ["", *_pieces(_args_text(call))]:
                delta = {"type": "input_json_delta", "partial_json": piece}
                self._event({"type": "content_block_delta", "index": i, "delta": delta})
            self._event({"type": "content_block_stop", "index": i})
        delta_usage = {"output_tokens": reply.output_tokens}
        final = {"stop_reason": stop, "stop_sequence": None}
        self._event({"type": "message_delta", "delta": final, "usage": delta_usage})
        self._event({"type": "message_stop"})

    # -- OpenAI ---------------------------------------------------------------------------

    def _openai_usage(self, reply: Reply) -> dict[str, Any]:
        details: dict[str, int] = {"cached_tokens": reply.cache_read_tokens}
        if reply.cache_write_tokens:
            details["cache_write_tokens"] = reply.cache_write_tokens
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": details,
        }

    def _openai_calls(self, reply: Reply) -> list[dict[str, Any]]:
        calls = []
        for call in reply.tool_calls:
            entry: dict[str, Any] = {"type": "function"}
            if call.id != "":
                entry["id"] = call.id or self.wire.next_id("call_")
            entry["function"] = {"name": call.name, "arguments": _args_text(call)}
            calls.append(entry)
        return calls

    def _openai(self, reply: Reply, model: str, stream: bool, body: dict[str, Any]) -> None:
        finish = reply.stop_reason or ("tool_calls" if reply.tool_calls else "stop")
        base = {"id": self.wire.next_id("chatcmpl-"), "created": 1700000000, "model": model}
        if stream:
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._openai_stream(reply, base, finish, usage)
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = self._openai_calls(reply)
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        payload = {
            **base,
            "object": "chat.completion",
            "choices": [choice],
            "usage": self._openai_usage(reply),
        }
        self._json(200, payload, reply.headers)

    def _openai_stream(self, reply: Reply, base: dict[str, Any], finish: str, usage: bool) -> None:
        chunk = {**base, "object": "chat.completion.chunk"}

        def send(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            self._sse({**chunk, "choices": [choice]})

        self._start_sse(reply.headers)
        if reply.raw_events is not None:
            for event in reply.raw_events:
                self._sse(event)
            return
        send({"role": "assistant", "content": ""})
        for sent, text in enumerate(self._text_chunks(reply), start=1):
            send({"content": text})
            self._wait_gate(reply, sent)
        if reply.stream_error:
            self._sse({"error": {"message": reply.stream_error, "type": "server_error"}})
            return
        for index, call in enumerate(self._openai_calls(reply)):
            head = {k: v for k, v in call.items() if k != "function"}
            first = {**head, "index": index, "function": {"name": call["function"]["name"]}}
            first["function"]["arguments"] = ""
            send({"tool_calls": [first]})
            for piece in _pieces(call["function"]["arguments"]):
                send({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        if reply.truncate:
            return  # HTTP/1.0: returning closes the connection mid-stream
        send({}, finish)
        if usage:
            self._sse({**chunk, "choices": [], "usage": self._openai_usage(reply)})
        self._sse("[DONE]")


def _openai_error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


@pytest.fixture
def wire_server() -> Iterator[WireServer]:
    """A started :class:`WireServer`, closed after the test."""
    with WireServer() as server:
        yield server
