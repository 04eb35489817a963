"""What an MCP server sends, in loopwise's terms: tool names, policies and results.

Everything here reads data a server chose, so every field is bounded and checked: names are
made valid and distinct, descriptions cut, images checked before they reach a model.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ..messages import ImagePart
from ..tools import Effect

__all__ = ["AskPolicy", "Policy", "content_to_result", "policy_for", "tool_names"]

AskPolicy: TypeAlias = Literal["destructive", "always", "never"]
MAX_DESCRIPTION = 4000
MAX_IMAGE_BYTES = 5 * 1024 * 1024
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Policy:
    """The approval and effect settings an MCP tool's annotations map to."""

    requires_approval: bool
    idempotent: bool
    effects: frozenset[Effect]


def _hint(annotations: Any, name: str, default: bool) -> bool:
    value = getattr(annotations, name, None) if annotations is not None else None
    return value if isinstance(value, bool) else default


def policy_for(annotations: Any, ask: AskPolicy = "destructive") -> Policy:
    """Map MCP tool annotations (spec defaults when absent: not read-only, destructive,
    not idempotent, open world) onto approval, idempotence and effects."""
    read_only = _hint(annotations, "read_only_hint", False)
    destructive = not read_only and _hint(annotations, "destructive_hint", True)
    open_world = _hint(annotations, "open_world_hint", True)
    effects: set[Effect] = {"read"} if read_only else {"write"}
    if destructive:
        effects.add("irreversible")
    if open_world:
        effects.add("egress")
        if not read_only:
            effects.add("external")
    approval = ask == "always" or (ask == "destructive" and destructive)
    idempotent = read_only or _hint(annotations, "idempotent_hint", False)
    return Policy(approval, idempotent, frozenset(effects))


def tool_names(
    remote: Iterable[str], prefix: str | None, taken: Iterable[str] = ()
) -> dict[str, str]:
    """Local name -> remote name: valid (``[a-zA-Z0-9_-]``, at most 64 characters), prefixed
    when a prefix is given, and distinct (a clash gets ``_2``, ``_3``...)."""
    used = set(taken)
    out: dict[str, str] = {}
    for name in remote:
        base = _BAD_NAME_CHARS.sub("_", name).strip("_") or "tool"
        if prefix:
            base = f"{prefix}_{base}"
        base = base[:64]
        local, n = base, 1
        while local in used:
            n += 1
            suffix = f"_{n}"
            local = base[: 64 - len(suffix)] + suffix
        used.add(local)
        out[local] = name
    return out


def description_of(tool: Any, server: str) -> str:
    """The tool's description, bounded, naming the server it comes from."""
    text = str(getattr(tool, "description", None) or getattr(tool, "title", None) or "")
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        text = text[:MAX_DESCRIPTION] + " [...]"
    return f"{text} (MCP server {server!r})" if text else f"(MCP server {server!r})"


def content_to_result(blocks: Iterable[Any], structured: Any = None) -> list[Any] | str:
    """A CallToolResult's content as a tool result: text, images as ``ImagePart``s, and
    resources, links and audio described in text; structured content as JSON when the
    server sent no text for it."""
    items: list[Any] = []
    for block in blocks:
        items.append(_block(block))
    texts = [i for i in items if isinstance(i, str)]
    if structured is not None and not texts:
        items.insert(0, json.dumps(structured, ensure_ascii=False, default=str))
    if not any(isinstance(i, ImagePart) for i in items):
        return "\n".join(str(i) for i in items)
    return items


def _block(block: Any) -> Any:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind == "image":
        return image_part(block.data, block.mime_type)
    if kind == "audio":
        return f"[audio ({_short(block.mime_type)}) left out: this model reads no audio]"
    if kind == "resource_link":
        return _link(block)
    if kind == "resource":
        return _embedded(block.resource)
    return f"[content of type {_short(kind)} left out]"


def image_part(data: Any, mime_type: Any) -> ImagePart | str:
    """An ``ImagePart`` when the data is valid base64 of a supported, bounded image."""
    mime = str(mime_type).lower().strip()
    if mime not in IMAGE_TYPES:
        return f"[image of type {_short(mime)} left out: not a supported image type]"
    if not isinstance(data, str) or len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        return "[image left out: larger than 5 MB]"
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "[image left out: its data is not valid base64]"
    if not raw:
        return "[image left out: empty]"
    return ImagePart(media_type=mime, data=data)


def _link(block: Any) -> str:
    parts = [f"[resource link: {_short(block.uri, 500)}"]
    name = getattr(block, "name", None)
    if name:
        parts.append(f" name={_short(name)}")
    mime = getattr(block, "mime_type", None)
    if mime:
        parts.append(f" type={_short(mime)}")
    description = getattr(block, "description", None)
    if description:
        parts.append(f" - {_short(description, 500)}")
    return "".join(parts) + "]"


def _embedded(resource: Any) -> str:
    uri = _short(getattr(resource, "uri", ""), 500)
    mime = getattr(resource, "mime_type", None) or "unknown type"
    text = getattr(resource, "text", None)
    if isinstance(text, str):
        return f"[resource {uri} ({_short(mime)})]\n{text}"
    blob = getattr(resource, "blob", None)
    size = len(blob) * 3 // 4 if isinstance(blob, str) else 0
    return f"[binary resource {uri} ({_short(mime)}, about {size} bytes) left out]"


def _short(value: Any, limit: int = 100) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def error_text(blocks: Iterable[Any]) -> str:
    """The text of an ``isError`` result, for the model's error observation."""
    texts = [str(getattr(b, "text", "")) for b in blocks if getattr(b, "type", None) == "text"]
    return "\n".join(t for t in texts if t) or "(no message)"


def schema_of(tool: Any) -> Mapping[str, Any]:
    """The tool's input schema as sent (an object schema with no properties when absent)."""
    schema = getattr(tool, "input_schema", None)
    return schema if isinstance(schema, Mapping) else {"type": "object"}
