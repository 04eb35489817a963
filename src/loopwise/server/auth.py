"""Bearer API keys: configured, or generated once and kept only as a SHA-256 hash.

A key arrives as ``Authorization: Bearer <key>``; its SHA-256 is compared with every stored
hash in constant time (:func:`hmac.compare_digest`). The server never keeps or logs a key
itself. A generated key lives in ``<data dir>/api_keys``: one hex hash per line, mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import UsageError
from .errors import error_response

__all__ = [
    "KEY_FILE_NAME",
    "MIN_KEY_LENGTH",
    "ApiKeys",
    "AuthSetup",
    "BearerAuth",
    "hash_key",
    "is_loopback",
    "resolve_auth",
]

KEY_FILE_NAME = "api_keys"
MIN_KEY_LENGTH = 16
_REALM = 'Bearer realm="loopwise"'


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key: what is stored and compared."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The hashes of the keys that may use the API."""

    hashes: tuple[str, ...] = ()

    @classmethod
    def of(cls, keys: Iterable[str]) -> ApiKeys:
        return cls(tuple(hash_key(k) for k in keys))

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def check(self, key: str) -> bool:
        """Whether ``key`` is one of ours; every stored hash is compared, in constant time."""
        digest = hash_key(key)
        found = False
        for stored in self.hashes:
            found |= hmac.compare_digest(digest, stored)
        return found


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AuthSetup:
    """What ``serve`` decided: the keys, whether they are required, a key to show once."""

    keys: ApiKeys
    require_auth: bool
    generated_key: str | None = None
    key_file: Path | None = None


def resolve_auth(configured: Collection[str], *, host: str, data_dir: Path) -> AuthSetup:
    """Keys from configuration; else, beyond loopback, the stored key (made once if none).

    With configured keys they are required whatever the host. On loopback without
    configured keys the API is open, as a local development server.
    """
    for key in configured:
        if len(key) < MIN_KEY_LENGTH:
            raise UsageError(
                f"An API key of {len(key)} characters is too short; use at least "
                f"{MIN_KEY_LENGTH} (e.g. from `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`)."
            )
    if configured:
        return AuthSetup(ApiKeys.of(configured), require_auth=True)
    if is_loopback(host):
        return AuthSetup(ApiKeys(), require_auth=False)
    path = data_dir / KEY_FILE_NAME
    hashes = _read_hashes(path)
    if hashes:
        return AuthSetup(ApiKeys(hashes), require_auth=True, key_file=path)
    key = "lw_" + secrets.token_urlsafe(32)
    _write_hash(path, hash_key(key))
    return AuthSetup(ApiKeys.of([key]), require_auth=True, generated_key=key, key_file=path)


def _read_hashes(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return ()
    return tuple(line for line in lines if len(line) == 64)


def _write_hash(path: Path, digest: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(digest + "\n")


class BearerAuth:
    """ASGI middleware: every path but the open ones needs a valid bearer key (when required).

    It sits outside routing, so unknown routes and the OpenAPI document are guarded too and
    a caller without a key learns nothing about which paths exist.
    """

    def __init__(self, app: ASGIApp, *, keys: ApiKeys, required: bool, open_paths: Collection[str]):
        self.app = app
        self.keys = keys
        self.required = required
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.required or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            response = error_response(
                401,
                "unauthorized",
                "This API needs a key: send the header 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": _REALM},
            )
        elif not self.keys.check(key.strip()):
            response = error_response(
                401,
                "unauthorized",
                "The API key is not valid; check it or ask for a new one.",
                {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
