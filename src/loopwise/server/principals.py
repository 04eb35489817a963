"""Who is calling: every API key names a principal, and the API scopes what it sees to it.

A principal has a name, the agents it may run (default: all), the memory namespace its
runs and ``/v1/memories`` use (default: its name) and an admin flag. A non-admin sees and
changes only its own runs (anything else is a 404, as if it did not exist) and only the
memories under its namespace: a ``memory_key`` it sends selects ``<namespace>/<key>``
within it. An admin sees every run (those made before principals existed included) and
uses memory keys as given.

Keys are configured as ``name:key`` (``LOOPWISE_API_KEYS``, ``--api-key``), as a plain
``key`` (a non-admin principal named ``key-`` + the first 12 hex digits of the key's
SHA-256), or in a keys file (JSON or TOML)::

    [[keys]]
    name = "alice"
    sha256 = "<hex SHA-256 of the key>"   # or key = "<the key>"
    agents = ["support"]                  # optional: only these agents
    memory = "acme"                       # optional: the memory namespace (default: name)
    admin = false
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = [
    "LOCAL",
    "MIN_KEY_LENGTH",
    "NAME_PATTERN",
    "Principal",
    "hash_key",
    "load_keys_file",
    "parse_key_entry",
]

MIN_KEY_LENGTH = 16
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key: what is stored and compared."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """An API key's identity: what it may run and see."""

    name: str
    admin: bool = False
    agents: frozenset[str] | None = None
    """The agents it may run and list (None: every agent)."""
    memory: str | None = None
    """Its memory namespace (None: its name)."""

    @property
    def id(self) -> str:
        return self.name

    def may_use(self, agent: str) -> bool:
        return self.agents is None or agent in self.agents

    def owns(self, owner: str | None) -> bool:
        """Whether it may see a run started by ``owner`` (None: before principals)."""
        return self.admin or owner == self.name

    def memory_key(self, requested: str) -> str:
        """The memory namespace key a requested ``memory_key`` stands for: within this
        principal's namespace (an admin's is used as given)."""
        if self.admin:
            return requested
        base = self.memory or self.name
        return f"{base}/{requested}" if requested else base


LOCAL = Principal("local", admin=True)
"""The caller of a server that needs no key (one user on loopback): sees everything."""


def _check_key(key: str) -> str:
    if len(key) < MIN_KEY_LENGTH:
        raise UsageError(
            f"An API key of {len(key)} characters is too short; use at least "
            f"{MIN_KEY_LENGTH} (e.g. from `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`)."
        )
    return key


def parse_key_entry(entry: str) -> tuple[str, Principal]:
    """``name:key`` or a plain ``key``: the key's hash and its principal."""
    name, sep, key = entry.partition(":")
    if sep and NAME_PATTERN.match(name) and key:
        return hash_key(_check_key(key)), Principal(name)
    digest = hash_key(_check_key(entry))
    return digest, Principal(f"key-{digest[:12]}")


def load_keys_file(path: Path) -> list[tuple[str, Principal]]:
    """The (key hash, principal) entries of a JSON or TOML keys file (see the module)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"Cannot read the keys file {str(path)!r}: {exc.strerror}.") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except ValueError as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise UsageError(f"The keys file {str(path)!r} is not valid {kind}: {exc}.") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"The keys file {str(path)!r} needs a non-empty list 'keys'.")
    found = [_entry(e, i) for i, e in enumerate(entries, 1)]
    _no_duplicates(found)
    return found


def _entry(entry: Any, n: int) -> tuple[str, Principal]:
    where = f"Key {n} of the keys file"
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where} must be a table/object with a name and a key or sha256.")
    unknown = set(entry) - {"name", "key", "sha256", "agents", "memory", "admin"}
    if unknown:
        raise UsageError(f"{where} has unknown fields: {', '.join(sorted(unknown))}.")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UsageError(f"{where} needs a name of 1-64 letters, digits, '_', '.' or '-'.")
    return _digest(entry, where), Principal(
        name=name,
        admin=_flag(entry.get("admin", False), where),
        agents=_names(entry.get("agents"), where),
        memory=_namespace(entry.get("memory"), where),
    )


def _digest(entry: Mapping[str, Any], where: str) -> str:
    key, digest = entry.get("key"), entry.get("sha256")
    if (key is None) == (digest is None):
        raise UsageError(f"{where} needs exactly one of 'key' and 'sha256'.")
    if key is not None:
        if not isinstance(key, str):
            raise UsageError(f"{where}: 'key' must be text.")
        return hash_key(_check_key(key))
    if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
        raise UsageError(f"{where}: 'sha256' must be 64 hex digits.")
    return digest.lower()


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{where}: 'admin' must be true or false.")
    return value


def _names(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where}: 'agents' must be a list of agent names.")
    return frozenset(value)


def _namespace(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise UsageError(f"{where}: 'memory' must be 1-64 letters, digits, '_', '.' or '-'.")
    return value


def _no_duplicates(entries: Iterable[tuple[str, Principal]]) -> None:
    seen: dict[str, str] = {}
    for digest, principal in entries:
        if digest in seen:
            raise UsageError(
                f"The same key is given to {seen[digest]!r} and {principal.name!r}; "
                "each key names one principal."
            )
        seen[digest] = principal.name
