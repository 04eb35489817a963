"""What a call may do and where it goes: effects (declared, else a default table), the
destinations and paths named in its arguments, and its argument values as text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

from ..tools import Effect, Tool
from .egress import hosts_named

__all__ = [
    "BUILTIN_EFFECTS",
    "BUILTIN_TRUSTED",
    "DESTINATION_KEYS",
    "PATH_KEYS",
    "destinations",
    "effects_of",
    "leaves",
    "paths",
]

BUILTIN_EFFECTS: dict[str, frozenset[Effect]] = {
    name: frozenset(cast("tuple[Effect, ...]", effects))
    for name, effects in {
        # files (confined to the workspace)
        "read_file": ("read",),
        "list_dir": ("read",),
        "find_files": ("read",),
        "grep": ("read",),
        "write_file": ("write",),
        "append_file": ("write",),
        "delete_file": ("write", "irreversible"),
        # code runs in the OS sandbox: no network, writes only the workspace
        "run_python": ("write",),
        "run_shell": ("write",),
        # host scripts chosen by the developer: any effect
        "run_script": ("external",),
        # network
        "http_get": ("read", "egress"),
        "screenshot": ("read", "egress"),
        # documents, git, system: read only
        "read_pdf": ("read",),
        "read_image": ("read",),
        "git_log": ("read",),
        "git_status": ("read",),
        "git_diff": ("read",),
        "git_show": ("read",),
        "git_blame": ("read",),
        "git_shortlog": ("read",),
        "git_grep": ("read",),
        "memory": ("read",),
        "disk_usage": ("read",),
        "load": ("read",),
        "processes": ("read",),
        "list_logs": ("read",),
        "tail_log": ("read",),
        "grep_log": ("read",),
        # long-term memory
        "remember": ("write",),
        "recall": ("read",),
    }.items()
}
"""Effects of the built-in tools, used only when a tool declares none."""

BUILTIN_TRUSTED = frozenset({"memory", "disk_usage", "load", "list_logs"})
"""Built-in tools whose output no third party shapes (everything else is untrusted)."""

DESTINATION_KEYS = frozenset(
    {
        "url", "urls", "uri", "href", "link", "target", "host", "hostname", "domain",
        "endpoint", "server", "webhook", "address", "to", "cc", "bcc", "recipient",
        "recipients", "email", "emails", "channel", "user", "users", "participants",
        "iban", "account", "phone", "number",
    }
)  # fmt: skip
"""Argument names whose values say where an egress or external call goes."""

PATH_KEYS = frozenset(
    {"path", "paths", "file", "filename", "file_path", "file_id", "dest", "destination"}
)

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]{0,15}://[^\s\"'<>`]+")
_EMAIL = re.compile(r"[^\s@<>\"',;]+@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def effects_of(
    tool: Tool, overrides: Mapping[str, frozenset[Effect]], undeclared: frozenset[Effect]
) -> frozenset[Effect]:
    """The tool's effects: configured, else declared, else the built-in table, else
    ``undeclared`` (a policy treats an unknown tool as consequential)."""
    found = overrides.get(tool.name)
    if found is not None:
        return found
    if tool.effects:
        return tool.effects
    return BUILTIN_EFFECTS.get(tool.name, undeclared)


def leaves(value: Any) -> Iterator[str]:
    """Every scalar in ``value`` as text (keys of objects too), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        yield str(int(value))  # 20.0 is named by "20"
    elif isinstance(value, int | float):
        yield json.dumps(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from leaves(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from leaves(v)
    else:
        yield str(value)


def destinations(args: Mapping[str, Any]) -> list[str]:
    """Where a call goes: values of destination-like arguments, and every URL or e-mail
    address found in any argument (so a URL hidden in free text is seen too)."""
    found: list[str] = []
    for key, value in args.items():
        if key.lower() in DESTINATION_KEYS:
            found.extend(v for v in leaves(value) if v.strip())
    for text in leaves(args):
        found.extend(m.group(0) for m in _URL.finditer(text))
        found.extend(m.group(0) for m in _EMAIL.finditer(text))
        found.extend(sorted(hosts_named(_URL.sub(" ", _EMAIL.sub(" ", text)))))
    return list(dict.fromkeys(found))


def paths(args: Mapping[str, Any]) -> list[str]:
    """The workspace paths a call names (``path``, ``file``...)."""
    return [x for k, v in args.items() if k.lower() in PATH_KEYS for x in leaves(v)]
